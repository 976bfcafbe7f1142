"""Text in, text out: seq2seq (source -> target) and causal LM (text, prompt -> completion, chat).

Both read a table (data/generation.py), tokenise with the model's tokenizer, and batch by length;
causal-LM training batches are packed where the model's attention allows it (`data.packing`).
"""

from __future__ import annotations

from lobell.modalities.base import own_generator


class _GenerationReader:
    """`read(path, input_column, label_column, problem)`: inputs and references; `label_column` None: inputs only."""

    def __init__(self, data, problem: str):
        self.data, self.problem = data, problem

    def __call__(self, path, input_column, label_column, problem):
        from lobell.data.generation import read_generation

        inputs, references, frame = read_generation(path, self.data, self.problem, with_targets=label_column is not None)
        if input_column is not None and input_column not in frame.columns:  # prompts or chats: `lobell predict`'s column
            frame = frame.assign(**{input_column: [str(item) for item in inputs]})
        return inputs, references, frame


class Seq2SeqModality:
    name = "seq2seq"
    kind = "seq2seq"
    problem = "seq2seq"
    find_unused_parameters = False

    def input_column(self, data) -> str:
        return data.source_column if self.kind == "seq2seq" else data.text_column

    def reader(self, data):
        return _GenerationReader(data, self.problem)

    def load_splits(self, cfg):
        """Train, validation (a held-out share of train when unset) and test: inputs and reference texts."""
        import numpy as np

        from lobell.data.splits import Split, Splits, overlap_notes, _limit
        from lobell.data.tables import split_train_validation
        from lobell.errors import LobellError
        from lobell.problems import make_problem

        data, read, notes = cfg.data, self.reader(cfg.data), []
        if data.train is None:
            raise LobellError("no training data: set data.train to a .csv, .jsonl or .parquet file")

        def split(path) -> Split:
            inputs, references, _ = read(path, None, True, self.problem)
            return Split(inputs, np.asarray(references, dtype=object), str(path))

        train = split(data.train)
        if data.validation is not None:
            validation = split(data.validation)
            notes += overlap_notes("validation", validation.inputs, train.inputs)
        else:
            keep, held = split_train_validation(len(train), None, data.val_fraction, cfg.seed,
                                                source=f"data file '{data.train}'")
            train, validation = train.subset(keep), train.subset(held)
            validation.source = f"{data.train} (held-out {data.val_fraction:.0%})"
            notes.append(f"validation: {len(validation)} examples held out of {data.train} (seed {cfg.seed})")
        test = split(data.test) if data.test is not None else None
        train = _limit(train, data.max_train_samples, cfg.seed, notes, "train")
        validation = _limit(validation, data.max_eval_samples, cfg.seed, notes, "validation")
        return Splits(train, validation, test, None, notes, make_problem(self.problem, None))

    def build_adapter(self, cfg, problem: str, labels, weights: bool):
        from lobell.models.generation import GenerationAdapter

        return GenerationAdapter.from_pretrained(cfg.model, self.kind, self.name, weights=weights,
                                                 generation=cfg.generation.settings(), precision=cfg.precision)

    def load_adapter(self, model_dir):
        from lobell.models.generation import GenerationAdapter

        return GenerationAdapter.load(model_dir, self.kind, self.name)

    def dataset(self, data, adapter, split, max_length: int | None, reporter):
        from lobell.data.generation import GenerationDataset, encode_causal, encode_seq2seq
        from lobell.data.text import max_length_for

        length = max_length or max_length_for(adapter.tokenizer, adapter.model.config, data.max_length)
        references = [str(t) for t in split.targets]
        if self.kind == "seq2seq":
            examples = encode_seq2seq(adapter.tokenizer, split.inputs, references, data.source_prefix, length)
        else:
            # lobell predict: prompts only (predict.py names the split "input" and gives no references)
            prediction = split.source == "input" and not any(references)
            examples = encode_causal(adapter.tokenizer, split.inputs, references, data.completion_only_loss, length,
                                     for_generation=prediction)
        return GenerationDataset(examples, references, length)

    def loader(self, cfg, adapter, dataset, train: bool, batch_size: int):
        from torch.utils.data import DataLoader

        from lobell.data.generation import GenerationCollator
        from lobell.data.text import LengthGroupedBatches
        from lobell.models.generation import supports_packing

        pack = None
        if train and self.kind == "causal" and cfg.data.packing and supports_packing(adapter.model):
            pack = dataset.max_length
        collate = GenerationCollator(adapter.tokenizer.pad_token_id, self.kind == "causal", pack)
        sampler = LengthGroupedBatches(dataset.lengths(), batch_size, seed=cfg.seed, shuffle=train)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers,
                          generator=own_generator())


class CausalModality(Seq2SeqModality):
    name = "causal"
    kind = "causal"
    problem = "causal-lm"
