"""Task name -> (modality spec, problem) (the names: registry.py), and the builders behind one interface.

Every builder here is a look-up: the modality spec (modalities/) reads, batches and models the
input; the problem (problems/) encodes targets and scores outputs. A new task family is one
module plus one line in `TASKS` (docs/development.md, "How to add a task family").
"""

from __future__ import annotations

from lobell.config import Config
from lobell.data.splits import Split, Splits
from lobell.errors import LobellError
from lobell.modalities.audio import AudioModality, SpeechModality
from lobell.modalities.base import Modality, own_generator  # noqa: F401 (own_generator: re-exported)
from lobell.modalities.detection import DetectionModality
from lobell.modalities.generation import CausalModality, Seq2SeqModality
from lobell.modalities.image import ImageModality
from lobell.modalities.masked_text import MaskedTextModality
from lobell.modalities.text import TextModality
from lobell.registry import TASKS
from lobell.resolve import eval_batch_size

MODALITIES: dict[str, Modality] = {spec.name: spec for spec in
                                   (TextModality(), ImageModality(), AudioModality(), SpeechModality(),
                                                    DetectionModality(), Seq2SeqModality(), CausalModality(),
                                                    MaskedTextModality())}


def parse_task(task: str) -> tuple[str, str]:
    """'text-classification' -> ('text', 'classification')."""
    if task not in TASKS:
        raise LobellError(f"task '{task}' is not available in this version of lobell")
    return TASKS[task]


def modality(name: str) -> Modality:
    if name not in MODALITIES:
        raise LobellError(f"modality '{name}' is not available in this version of lobell")
    return MODALITIES[name]


def num_outputs(problem: str, labels: list[str] | None) -> int:
    from lobell.problems import make_problem

    return make_problem(problem, labels).num_outputs


def build_adapter(cfg: Config, modality_name: str, problem: str, labels, weights: bool = True):
    """The backbone with its new head, its preprocessing and its layer map (`weights=False`: structure only).
    A pickled weights file that would run code is refused in one sentence (models/hub.py)."""
    from lobell.models.hub import pickles_refused

    with pickles_refused(cfg.model):
        if cfg.tasks is not None:  # one head per task (docs/multi-task.md)
            from lobell.models.multitask import build_multitask_adapter

            return build_multitask_adapter(cfg, modality_name, labels, weights)
        return modality(modality_name).build_adapter(cfg, problem, labels, weights)


def load_adapter(model_dir, modality_name: str):
    """A saved model/ folder back as an adapter (predict, evaluate, a distillation teacher); a pickle
    that would run code is refused in one sentence."""
    from pathlib import Path

    from lobell.models.hub import pickles_refused

    if (Path(model_dir) / "adapter_config.json").is_file():  # saved with lora.merge: false
        from lobell.strategies.lora import load_unmerged

        with pickles_refused(str(model_dir)):
            return load_unmerged(model_dir, modality_name)
    if modality_name not in MODALITIES:
        raise LobellError(f"run folder model '{model_dir}' has unknown modality '{modality_name}'")
    with pickles_refused(str(model_dir)):
        return MODALITIES[modality_name].load_adapter(model_dir)


def build_dataset(cfg: Config, adapter, split: Split, max_length: int | None = None, reporter=None):
    """The split as the model reads it; `reporter` shows a bar over slow preprocessing (tokenising)."""
    return modality(adapter.modality).dataset(cfg.data, adapter, split, max_length, reporter)


def build_loader(cfg: Config, adapter, dataset, train: bool):
    """Batches for training (shuffled) or evaluation (sorted by length: least padding)."""
    batch_size = cfg.batch_size if train else eval_batch_size(cfg)
    return modality(adapter.modality).loader(cfg, adapter, dataset, train, batch_size)


def data_reader(cfg: Config, modality_name: str):
    """The `read` function of `load_splits` for the modality: text tables, images or audio."""
    return modality(modality_name).reader(cfg.data)


def input_column(cfg: Config, modality_name: str) -> str:
    return modality(modality_name).input_column(cfg.data)


def load_task_splits(cfg: Config, modality_name: str, problem: str) -> Splits:
    """`load_splits` with the modality's reader and input column; notes say what was skipped."""
    from lobell.data.splits import load_splits

    if hasattr(modality(modality_name), "load_splits"):  # its own files and targets (detection: boxes per image)
        return modality(modality_name).load_splits(cfg)
    read = data_reader(cfg, modality_name)
    if cfg.tasks is not None:  # a label column per task, packed into one target row (docs/multi-task.md)
        from lobell.data.multitask import load_multitask_splits

        splits = load_multitask_splits(cfg, read, input_column(cfg, modality_name))
    else:
        splits = load_splits(cfg.data, problem, cfg.seed, input_column=input_column(cfg, modality_name), read=read)
    splits.notes.extend(read.notes() if hasattr(read, "notes") else [])
    return splits


__all__ = ["MODALITIES", "TASKS", "build_adapter", "build_dataset", "build_loader", "load_adapter",
           "load_task_splits", "modality", "parse_task", "Splits"]
