"""Unlabeled text for masked-LM training (task: masked-lm): a text column or a .txt file, no labels."""

from __future__ import annotations

from lobell.modalities.base import own_generator


class MaskedTextModality:
    name = "masked-text"
    find_unused_parameters = False

    def input_column(self, data) -> str:
        return data.text_column

    def reader(self, data):
        def read(path, input_column: str, label_column, problem: str):
            import pandas as pd

            from lobell.data.masked_text import read_texts

            texts = read_texts(path, input_column)
            return texts, None, pd.DataFrame({input_column: texts})

        return read

    def load_splits(self, cfg):
        """Train, validation (a held-out share of train when unset) and test; no labels to fit."""
        from lobell.data.masked_text import read_texts
        from lobell.data.splits import Split, Splits, split_train_validation
        from lobell.errors import LobellError
        from lobell.problems.masked_lm import MaskedLM

        data = cfg.data
        if data.train is None:
            raise LobellError("no training text: set data.train to a .txt file (one text per line) or a table")
        split = lambda path: Split(read_texts(path, data.text_column), None, str(path))  # noqa: E731
        train, notes = split(data.train), []
        if data.validation is not None:
            validation = split(data.validation)
        else:
            train_idx, val_idx = split_train_validation(len(train.inputs), None, data.val_fraction, cfg.seed,
                                                        source=f"data file '{data.train}'")
            validation = Split([train.inputs[i] for i in val_idx], None, f"{data.train} (held-out)")
            train = Split([train.inputs[i] for i in train_idx], None, str(data.train))
            notes.append(f"validation: {len(validation.inputs)} texts held out of {data.train} (seed {cfg.seed})")
        test = split(data.test) if data.test is not None else None
        for part in (train, validation, test):
            if part is not None:
                part.targets = MaskedLM().dummy_targets(len(part.inputs))
        return Splits(train, validation, test, None, notes, MaskedLM())

    def build_adapter(self, cfg, problem: str, labels, weights: bool):
        from lobell.models.masked_lm import MaskedLMAdapter

        return MaskedLMAdapter.from_pretrained(cfg.model, weights=weights)

    def load_adapter(self, model_dir):
        from lobell.models.masked_lm import MaskedLMAdapter

        return MaskedLMAdapter.load(model_dir)

    def dataset(self, data, adapter, split, max_length: int | None, reporter):
        from lobell.data.masked_text import MaskableText
        from lobell.data.text import max_length_for

        length = max_length or max_length_for(adapter.tokenizer, adapter.model.config, data.max_length)
        return MaskableText(adapter.tokenizer, split.inputs, length, offsets=data.whole_word_mask)

    def loader(self, cfg, adapter, dataset, train: bool, batch_size: int):
        from torch.utils.data import DataLoader

        from lobell.data.masked_text import MaskingCollator
        from lobell.data.text import LengthGroupedBatches

        collate = MaskingCollator(adapter.tokenizer, cfg.data.mlm_probability, cfg.data.whole_word_mask, train)
        sampler = LengthGroupedBatches(dataset.lengths(), batch_size, seed=cfg.seed, shuffle=train)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers,
                          generator=own_generator())
