"""Audio clips (classification, multi-label, regression) and speech (transcripts through a CTC head).

Both read audio files at the model's sampling rate and batch clips of similar length. DDP must
look for unused parameters: wav2vec2-style layerdrop drops whole blocks in some steps, and the
SpecAugment embedding is only used where a mask falls (as the HF Trainer does).
"""

from __future__ import annotations

from lobell.modalities.base import own_generator, target_dtype


class AudioModality:
    name = "audio"
    find_unused_parameters = True

    def input_column(self, data) -> str:
        return data.audio_column

    def reader(self, data):
        from lobell.data.audio import AudioReader

        return AudioReader()

    def build_adapter(self, cfg, problem: str, labels, weights: bool):
        from lobell.models.audio import AudioAdapter

        return AudioAdapter.from_pretrained(cfg.model, labels, problem=problem, weights=weights,
                                            train_feature_encoder=cfg.strategy.train_feature_encoder)

    def load_adapter(self, model_dir):
        from lobell.models.audio import AudioAdapter

        return AudioAdapter.load(model_dir)

    def dataset(self, data, adapter, split, max_length: int | None, reporter):
        from lobell.data.audio import AudioDataset

        seconds = data.max_seconds
        return AudioDataset(split.inputs, split.targets, adapter.sampling_rate,
                            round(seconds * adapter.sampling_rate) if seconds else None,
                            encode=getattr(adapter, "encode_transcript", None))

    def collate_dtype(self, dataset):
        return target_dtype(dataset.targets)  # classes; or multi-hot rows / numbers

    def loader(self, cfg, adapter, dataset, train: bool, batch_size: int):
        """Similar lengths in a batch: least padding (training: random buckets; evaluation: sorted)."""
        from torch.utils.data import DataLoader

        from lobell.data.audio import AudioCollator
        from lobell.data.text import LengthGroupedBatches

        collate = AudioCollator(adapter.feature_extractor, self.collate_dtype(dataset))
        sampler = LengthGroupedBatches(dataset.lengths(), batch_size, seed=cfg.seed, shuffle=train)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers,
                          generator=own_generator())


class SpeechModality(AudioModality):
    name = "speech"

    def build_adapter(self, cfg, problem: str, labels, weights: bool):
        from lobell.models.audio import SpeechAdapter

        return SpeechAdapter.from_pretrained(cfg.model, labels, weights=weights,
                                             train_feature_encoder=cfg.strategy.train_feature_encoder)

    def load_adapter(self, model_dir):
        from lobell.models.audio import SpeechAdapter

        return SpeechAdapter.load(model_dir)

    def collate_dtype(self, dataset):
        return None  # transcripts: the collator pads their token ids
