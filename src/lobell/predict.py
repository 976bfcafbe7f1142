"""Use a finished run: predictions and metrics from its `model/` folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from lobell.config import Config, load_config
from lobell.console import Reporter
from lobell.data.splits import Split, TargetEncoder
from lobell.errors import LobellError
from lobell.problems import make_problem
from lobell.run_dir import check_run_dir
from lobell.tasks import build_dataset, build_loader, data_reader, input_column, load_adapter, parse_task
from lobell.training.loop import predict_logits
from lobell.training.accelerator import make_accelerator


class Predictor:
    """A trained model with its run's preprocessing, task and label names."""

    def __init__(self, cfg: Config, adapter, labels: list[str] | None):
        self.cfg = cfg
        self.adapter = adapter
        self.labels = labels
        self.modality, self.problem = parse_task(cfg.task)
        if cfg.tasks is not None:  # a multi-task model: its tasks and their labels travel in the head spec
            from lobell.data.multitask import TaskHeads

            self.labels = TaskHeads.from_spec(adapter.head, cfg.loss.label_smoothing)
        self.task = make_problem(self.problem, self.labels)  # `problem` stays the name, as callers read it

    @classmethod
    def from_run(cls, run_dir: str | Path) -> Predictor:
        run_dir = check_run_dir(Path(run_dir))
        cfg = load_config(run_dir / "config.yaml")
        model_dir = run_dir / "model"
        info_path = model_dir / "lobell.json"
        if not info_path.is_file():
            raise LobellError(f"run folder '{run_dir}' has no model/lobell.json: the model folder is incomplete; "
                              f"train again")
        info = _read_model_info(run_dir, info_path)
        adapter = _load_model(run_dir, model_dir, info["modality"])
        return cls(cfg, adapter, info.get("labels"))

    def input_column(self) -> str:
        return input_column(self.cfg, self.modality)

    def logits(self, inputs: list, reporter: Reporter | None = None) -> np.ndarray:
        """Raw outputs for `inputs`, in their order."""
        dummy = self.task.dummy_targets(len(inputs))  # no targets to compare with
        reporter = reporter or Reporter(quiet=True)
        dataset = build_dataset(self.cfg, self.adapter, Split(list(inputs), dummy, "input"), reporter=reporter)
        accelerator = make_accelerator(self.cfg.precision)
        loader = accelerator.prepare(build_loader(self.cfg, self.adapter, dataset, train=False))
        model = accelerator.prepare_model(self.adapter.model, evaluation_mode=True)
        logits, _, _ = predict_logits(accelerator, self.adapter, model, loader, reporter, description="predict")
        self.adapter.model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        return logits

    def predict_table(self, inputs: list, reporter: Reporter | None = None) -> pd.DataFrame:
        """One row per input: the prediction and its probability (or the value, for regression)."""
        return self.task.table(self.logits(inputs, reporter))  # multi-task: a column block per task

    def evaluate_file(self, path: Path, reporter: Reporter | None = None) -> dict[str, float]:
        if self.cfg.tasks is not None:
            return evaluate_task_file(self, path, reporter)
        read = data_reader(self.cfg, self.modality)
        inputs, raw, _ = read(path, self.input_column(), self.cfg.data.label_column, self.problem)
        _report_skipped(read)
        targets = self._encode(raw, path)
        logits = self.logits(inputs, reporter)
        metrics = self.task.metrics(logits, targets)
        metrics["examples"] = len(inputs)
        return metrics

    def _encode(self, raw: list, path: Path) -> np.ndarray:
        return TargetEncoder(self.problem, self.labels, self.cfg.data.label_column).encode(raw, path)


def evaluate_task_file(predictor, path, reporter=None) -> dict[str, float]:
    """`lobell evaluate` for a multi-task run: every task's metrics and the weighted loss on a labelled file."""
    import torch

    from lobell.data.multitask import read_task_columns
    from lobell.problems.multitask import MultiTaskLoss, task_metrics

    heads = predictor.labels
    read = data_reader(predictor.cfg, predictor.modality)
    inputs, raws = read_task_columns(predictor.cfg, read, path, predictor.input_column())
    blocks = [TargetEncoder(task.kind, task.labels, task.label_column).encode(raw, path) for task, raw in
              zip(heads.tasks, raws)]
    targets = np.concatenate([b.astype(np.float32).reshape(len(inputs), -1) for b in blocks], axis=1)
    logits = predictor.logits(inputs, reporter)
    metrics = task_metrics(heads, logits, targets)
    metrics["loss"] = float(MultiTaskLoss(heads)(torch.from_numpy(logits), torch.from_numpy(targets)))
    metrics["examples"] = len(inputs)
    return metrics


def read_prediction_inputs(predictor: Predictor, path: Path) -> tuple[list, pd.DataFrame]:
    """Inputs from a data file, or (images) a folder of images; labels are not needed."""
    read = data_reader(predictor.cfg, predictor.modality)
    inputs, _, frame = read(path, predictor.input_column(), None, predictor.problem)
    _report_skipped(read)
    return inputs, frame


def _report_skipped(read) -> None:
    """Images skipped under data.skip_bad_images are left out of the output: say so on stderr."""
    for note in getattr(read, "notes", lambda: [])():
        Reporter().log(note)


def _read_model_info(run_dir: Path, info_path: Path) -> dict:
    """model/lobell.json, or one sentence saying the model folder is damaged."""
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LobellError(f"run folder '{run_dir}': {info_path.name} in model/ cannot be read ({exc}); the model "
                          f"folder is damaged: train again") from None
    if not isinstance(info, dict) or info.get("modality") not in ("text", "image", "audio", "speech"):
        raise LobellError(f"run folder '{run_dir}': model/{info_path.name} names no modality (text, image, audio or "
                          f"speech); the model folder is damaged: train again")
    return info


def _load_model(run_dir: Path, model_dir: Path, modality: str):
    """The run's saved model; a folder with missing or damaged files is a user error, not a traceback."""
    from safetensors import SafetensorError

    try:
        return load_adapter(model_dir, modality)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LobellError(f"run folder '{run_dir}': its model/ folder could not be loaded ({reason}); it is "
                          f"incomplete or damaged: train again") from None
