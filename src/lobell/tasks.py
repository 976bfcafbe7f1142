"""Task names -> (modality, problem), and the modality-specific builders behind one interface."""

from __future__ import annotations

from torch.utils.data import DataLoader

from lobell.config import Config
from lobell.data.splits import Split, Splits
from lobell.errors import LobellError

PROBLEMS = {"classification": "classification", "multi-label": "multi-label", "regression": "regression",
            "recognition": "ctc"}  # speech-recognition: transcripts through a CTC head


def parse_task(task: str) -> tuple[str, str]:
    """'text-classification' -> ('text', 'classification')."""
    modality, _, problem = task.partition("-")
    return modality, PROBLEMS[problem]


def num_outputs(problem: str, labels: list[str] | None) -> int:
    return 1 if problem == "regression" else len(labels)


def build_adapter(cfg: Config, modality: str, problem: str, labels: list[str] | None, weights: bool = True):
    """The backbone with its new head, its preprocessing and its layer map (`weights=False`: structure only)."""
    from lobell.models.hub import pickles_refused

    with pickles_refused(cfg.model):
        return _build_adapter(cfg, modality, problem, labels, weights)


def _build_adapter(cfg: Config, modality: str, problem: str, labels: list[str] | None, weights: bool):
    if cfg.tasks is not None:  # one head per task (docs/multi-task.md)
        from lobell.models.multitask import build_multitask_adapter

        return build_multitask_adapter(cfg, modality, labels, weights)
    if modality == "text":
        from lobell.models.text import TextAdapter

        head = cfg.head.model_dump() if cfg.head is not None else None
        return TextAdapter.from_pretrained(cfg.model, num_outputs(problem, labels), problem, labels, weights=weights,
                                           head=head)
    if modality == "image":
        from lobell.models.vision import VisionAdapter

        head = cfg.head.model_dump() if cfg.head is not None else None
        return VisionAdapter.from_pretrained(cfg.model, num_outputs(problem, labels), weights=cfg.model_weights,
                                             head=head, image_size=cfg.data.image_size, load_weights=weights)
    if modality in ("audio", "speech"):  # labels: class names, or the CTC character vocabulary
        from lobell.models.audio import AudioAdapter, SpeechAdapter

        if modality == "audio":
            return AudioAdapter.from_pretrained(cfg.model, labels, problem=problem, weights=weights,
                                                train_feature_encoder=cfg.strategy.train_feature_encoder)
        return SpeechAdapter.from_pretrained(cfg.model, labels, weights=weights,
                                             train_feature_encoder=cfg.strategy.train_feature_encoder)
    raise LobellError(f"task '{cfg.task}' is not available in this version of lobell")


def load_adapter(model_dir, modality: str):
    """A saved model/ folder back as an adapter (predict, evaluate, a distillation teacher)."""
    from lobell.models.hub import pickles_refused

    with pickles_refused(str(model_dir)):
        return _load_adapter(model_dir, modality)


def _load_adapter(model_dir, modality: str):
    from pathlib import Path

    if (Path(model_dir) / "adapter_config.json").is_file():  # saved with lora.merge: false
        from lobell.strategies.lora import load_unmerged

        return load_unmerged(model_dir, modality)
    if modality == "text":
        from lobell.models.text import TextAdapter

        return TextAdapter.load(model_dir)
    if modality == "image":
        from lobell.models.vision import VisionAdapter

        return VisionAdapter.load(model_dir)
    if modality in ("audio", "speech"):
        from lobell.models.audio import AudioAdapter, SpeechAdapter

        return (AudioAdapter if modality == "audio" else SpeechAdapter).load(model_dir)
    raise LobellError(f"run folder model '{model_dir}' has unknown modality '{modality}'")


def build_dataset(cfg: Config, adapter, split: Split, max_length: int | None = None, reporter=None):
    """The split as the model reads it; `reporter` shows a bar over slow preprocessing (tokenising)."""
    if adapter.modality == "text":
        from lobell.data.text import TokenizedText, max_length_for

        length = max_length or max_length_for(adapter.tokenizer, adapter.model.config, cfg.data.max_length)
        return TokenizedText(adapter.tokenizer, split.inputs, split.targets, length,
                             track=reporter.track if reporter else None)
    if adapter.modality == "image":
        from lobell.data.image import ImageDataset

        return ImageDataset(split.inputs, split.targets, adapter.preprocessing.eval_transform())
    if adapter.modality in ("audio", "speech"):
        from lobell.data.audio import AudioDataset

        seconds = cfg.data.max_seconds
        return AudioDataset(split.inputs, split.targets, adapter.sampling_rate,
                            round(seconds * adapter.sampling_rate) if seconds else None,
                            encode=getattr(adapter, "encode_transcript", None))
    raise LobellError(f"modality '{adapter.modality}' has no dataset builder")


def own_generator():
    """A loader's own generator: starting an epoch then draws nothing from the global RNG, so a
    resumed run's RNG (restored from the checkpoint) matches the uninterrupted run's exactly."""
    import torch

    return torch.Generator().manual_seed(0)


def build_loader(cfg: Config, adapter, dataset, train: bool) -> DataLoader:
    """Batches for training (shuffled) or evaluation (sorted by length: least padding)."""
    batch_size = cfg.batch_size if train else (cfg.eval_batch_size or 2 * cfg.batch_size)
    if adapter.modality == "text":
        import torch

        from lobell.data.text import LengthGroupedBatches, PadCollator

        target_dtype = torch.long if dataset.targets.dtype.kind == "i" else torch.float32
        collate = PadCollator(adapter.tokenizer.pad_token_id or 0, target_dtype)
        if train and not cfg.data.group_by_length:
            from lobell.data.image import ShuffledBatches

            sampler = ShuffledBatches(len(dataset), batch_size, seed=cfg.seed)
        else:
            sampler = LengthGroupedBatches(dataset.lengths(), batch_size, seed=cfg.seed, shuffle=train,
                                           drop_single=train and cfg.head is not None and cfg.head.batch_norm)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers,
                          generator=own_generator())
    if adapter.modality == "image":
        return _image_loader(cfg, adapter, dataset, train, batch_size)
    if adapter.modality in ("audio", "speech"):
        import torch

        from lobell.data.audio import AudioCollator
        from lobell.data.text import LengthGroupedBatches

        # Similar lengths in a batch: least padding (training: random buckets; evaluation: sorted).
        target_dtype = None if adapter.modality == "speech" else (
            torch.long if dataset.targets.dtype.kind == "i" else torch.float32)  # classes; or multi-hot / numbers
        collate = AudioCollator(adapter.feature_extractor, target_dtype)
        sampler = LengthGroupedBatches(dataset.lengths(), batch_size, seed=cfg.seed, shuffle=train)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers,
                          generator=own_generator())
    raise LobellError(f"modality '{adapter.modality}' has no loader builder")


def _image_loader(cfg: Config, adapter, dataset, train: bool, batch_size: int) -> DataLoader:
    """Training: augmented, reshuffled each epoch, optionally mixed; evaluation: in order, as the model expects."""
    import torch

    from lobell.data.image import ImageCollator, MixBatches, ShuffledBatches

    collate = ImageCollator(torch.long if dataset.targets.dtype.kind == "i" else torch.float32)
    workers = {"num_workers": cfg.data.num_workers, "persistent_workers": cfg.data.num_workers > 0,
               "pin_memory": torch.cuda.is_available(), "generator": own_generator()}
    if not train:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, **workers)
    mix = cfg.mixup
    if mix.mixup_alpha > 0 or mix.cutmix_alpha > 0:
        collate = MixBatches(collate, adapter.num_outputs, mix.mixup_alpha, mix.cutmix_alpha, mix.prob, mix.switch_prob)
    augmented = dataset.with_transform(adapter.preprocessing.train_transform(cfg.augment))
    sampler = ShuffledBatches(len(dataset), batch_size, seed=cfg.seed)
    return DataLoader(augmented, batch_sampler=sampler, collate_fn=collate, **workers)


def data_reader(cfg: Config, modality: str):
    """The `read` function of `load_splits` for the modality: text tables, or images."""
    if modality == "image":
        from lobell.data.image import ImageReader

        return ImageReader(skip_bad=cfg.data.skip_bad_images)
    if modality in ("audio", "speech"):
        from lobell.data.audio import AudioReader

        return AudioReader()
    from lobell.data.splits import read_inputs_and_targets

    return read_inputs_and_targets


def input_column(cfg: Config, modality: str) -> str:
    if modality in ("audio", "speech"):
        return cfg.data.audio_column
    return cfg.data.image_column if modality == "image" else cfg.data.text_column


def load_task_splits(cfg: Config, modality: str, problem: str) -> Splits:
    """`load_splits` with the modality's reader and input column; notes say what was skipped."""
    from lobell.data.splits import load_splits

    read = data_reader(cfg, modality)
    if cfg.tasks is not None:  # a label column per task, packed into one target row (docs/multi-task.md)
        from lobell.data.multitask import load_multitask_splits

        splits = load_multitask_splits(cfg, read, input_column(cfg, modality))
    else:
        splits = load_splits(cfg.data, problem, cfg.seed, input_column=input_column(cfg, modality), read=read)
    splits.notes.extend(read.notes() if hasattr(read, "notes") else [])
    return splits


__all__ = ["parse_task", "build_adapter", "load_adapter", "build_dataset", "build_loader", "load_task_splits", "Splits"]
