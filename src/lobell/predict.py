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
from lobell.problems.base import collects_outputs
from lobell.training.loop import collect_outputs
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
        self._accelerator = None  # made on the first call and kept: making one reads the environment (~6 ms)

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
        """Raw outputs for `inputs`, in their order (detection: boxes, labels and scores per image)."""
        return self.outputs(inputs, reporter)[0]

    def outputs(self, inputs: list, reporter: Reporter | None = None, targets=None) -> tuple:
        """(outputs, targets) for `inputs` in their order; `targets` None: no targets to compare with."""
        targets = self.task.dummy_targets(len(inputs)) if targets is None else targets
        reporter = reporter or Reporter(quiet=True)
        dataset = build_dataset(self.cfg, self.adapter, Split(list(inputs), targets, "input"), reporter=reporter)
        self._accelerator = accelerator = self._accelerator or make_accelerator(self.cfg.precision)
        loader = accelerator.prepare(build_loader(self.cfg, self.adapter, dataset, train=False))
        model = accelerator.prepare_model(self.adapter.model, evaluation_mode=True)
        try:
            outputs, collected = collect_outputs(accelerator, self.adapter, model, loader, reporter, self.task,
                                                 description="predict")
        finally:
            self.adapter.model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
            # prepare() keeps every loader and model it was given: a server calls this once per batch.
            accelerator._dataloaders.clear()
            accelerator._models.clear()
        return outputs, collected

    def predict_table(self, inputs: list, reporter: Reporter | None = None, threshold: float | None = None
                      ) -> pd.DataFrame:
        """One row per input: the prediction and its probability (or the value, for regression; detection:
        the boxes scoring at least `threshold`, their label names and scores)."""
        outputs = self.logits(inputs, reporter)
        if threshold is not None:
            if not collects_outputs(self.task):
                raise LobellError("--threshold applies to object-detection runs (the lowest box score kept)")
            return self.task.table(outputs, threshold)
        return self.task.table(outputs)  # multi-task: a column block per task

    def evaluate_file(self, path: Path, reporter: Reporter | None = None) -> dict[str, float]:
        if self.cfg.tasks is not None:
            return evaluate_task_file(self, path, reporter)
        read = data_reader(self.cfg, self.modality)
        if collects_outputs(self.task):  # boxes: read with the run's classes, scored on the model's outputs
            return evaluate_collected(self, read, path, reporter)
        inputs, raw, _ = read(path, self.input_column(), self.cfg.data.label_column, self.problem)
        _report_skipped(read)
        targets = self._encode(raw, path)
        logits = self.logits(inputs, reporter)
        metrics = self.task.metrics(logits, targets)
        metrics["examples"] = len(inputs)
        return metrics

    def _encode(self, raw: list, path: Path) -> np.ndarray:
        return TargetEncoder(self.problem, self.labels, self.cfg.data.label_column).encode(raw, path)


def evaluate_collected(predictor, read, path, reporter=None) -> dict:
    """`lobell evaluate` for a problem that collects its own outputs (detection: mAP on a labelled data set)."""
    read.class_names = predictor.labels
    inputs, raw, _ = read(path, predictor.input_column(), predictor.cfg.data.label_column, predictor.problem)
    if raw is None:
        raise LobellError(f"data '{path}' holds images without boxes; evaluate needs a COCO, YOLO or VOC data set")
    _report_skipped(read)
    outputs, targets = predictor.outputs(inputs, reporter, np.array(raw, dtype=object))
    metrics = predictor.task.metrics(outputs, targets)
    metrics["examples"] = len(inputs)
    return metrics


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
    from lobell.tasks import MODALITIES

    if not isinstance(info, dict) or info.get("modality") not in MODALITIES:
        raise LobellError(f"run folder '{run_dir}': model/{info_path.name} names no modality "
                          f"({', '.join(MODALITIES)}); the model folder is damaged: train again")
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
