"""Text: a table column of strings, tokenised by the model's tokenizer, batched by length."""

from __future__ import annotations

from lobell.modalities.base import own_generator, target_dtype


class TextModality:
    name = "text"
    find_unused_parameters = False

    def input_column(self, data) -> str:
        return data.text_column

    def reader(self, data):
        from lobell.data.splits import read_inputs_and_targets

        return read_inputs_and_targets

    def build_adapter(self, cfg, problem: str, labels, weights: bool):
        from lobell.models.text import TextAdapter
        from lobell.problems import make_problem

        head = cfg.head.model_dump() if cfg.head is not None else None
        return TextAdapter.from_pretrained(cfg.model, make_problem(problem, labels).num_outputs, problem, labels,
                                           weights=weights, head=head)

    def load_adapter(self, model_dir):
        from lobell.models.text import TextAdapter

        return TextAdapter.load(model_dir)

    def dataset(self, data, adapter, split, max_length: int | None, reporter):
        from lobell.data.text import TokenizedText, max_length_for

        length = max_length or max_length_for(adapter.tokenizer, adapter.model.config, data.max_length)
        return TokenizedText(adapter.tokenizer, split.inputs, split.targets, length,
                             track=reporter.track if reporter else None)

    def loader(self, cfg, adapter, dataset, train: bool, batch_size: int):
        from torch.utils.data import DataLoader

        from lobell.data.image import ShuffledBatches
        from lobell.data.text import LengthGroupedBatches, PadCollator

        collate = PadCollator(adapter.tokenizer.pad_token_id or 0, target_dtype(dataset.targets))
        if train and not cfg.data.group_by_length:
            sampler = ShuffledBatches(len(dataset), batch_size, seed=cfg.seed)
        else:
            sampler = LengthGroupedBatches(dataset.lengths(), batch_size, seed=cfg.seed, shuffle=train,
                                           drop_single=train and cfg.head is not None and cfg.head.batch_norm)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers,
                          generator=own_generator())
