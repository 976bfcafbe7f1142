"""Task names -> (modality, problem), and the modality-specific builders behind one interface."""

from __future__ import annotations

from torch.utils.data import DataLoader

from lobell.config import Config
from lobell.data.splits import Split, Splits
from lobell.errors import LobellError

PROBLEMS = {"classification": "classification", "multi-label": "multi-label", "regression": "regression"}


def parse_task(task: str) -> tuple[str, str]:
    """'text-classification' -> ('text', 'classification')."""
    modality, _, problem = task.partition("-")
    return modality, PROBLEMS[problem]


def num_outputs(problem: str, labels: list[str] | None) -> int:
    return 1 if problem == "regression" else len(labels)


def build_adapter(cfg: Config, modality: str, problem: str, labels: list[str] | None, weights: bool = True):
    """The backbone with its new head, its preprocessing and its layer map (`weights=False`: structure only)."""
    if modality == "text":
        from lobell.models.text import TextAdapter

        return TextAdapter.from_pretrained(cfg.model, num_outputs(problem, labels), problem, labels, weights=weights)
    raise LobellError(f"task '{cfg.task}' is not available in this version of lobell")


def load_adapter(model_dir, modality: str):
    if modality == "text":
        from lobell.models.text import TextAdapter

        return TextAdapter.load(model_dir)
    raise LobellError(f"run folder model '{model_dir}' has unknown modality '{modality}'")


def build_dataset(cfg: Config, adapter, split: Split, max_length: int | None = None):
    if adapter.modality == "text":
        from lobell.data.text import TokenizedText, max_length_for

        length = max_length or max_length_for(adapter.tokenizer, adapter.model.config, cfg.data.max_length)
        return TokenizedText(adapter.tokenizer, split.inputs, split.targets, length)
    raise LobellError(f"modality '{adapter.modality}' has no dataset builder")


def build_loader(cfg: Config, adapter, dataset, train: bool) -> DataLoader:
    """Batches for training (shuffled) or evaluation (sorted by length: least padding)."""
    batch_size = cfg.batch_size if train else (cfg.eval_batch_size or 2 * cfg.batch_size)
    if adapter.modality == "text":
        import torch

        from lobell.data.text import LengthGroupedBatches, PadCollator

        target_dtype = torch.long if dataset.targets.dtype.kind == "i" else torch.float32
        collate = PadCollator(adapter.tokenizer.pad_token_id or 0, target_dtype)
        if train and not cfg.data.group_by_length:
            generator = torch.Generator().manual_seed(cfg.seed)
            return DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate, generator=generator)
        sampler = LengthGroupedBatches(dataset.lengths(), batch_size, seed=cfg.seed, shuffle=train)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers)
    raise LobellError(f"modality '{adapter.modality}' has no loader builder")


__all__ = ["parse_task", "build_adapter", "load_adapter", "build_dataset", "build_loader", "Splits"]
