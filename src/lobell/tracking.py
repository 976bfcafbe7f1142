"""Experiment tracking (`tracking: tensorboard | mlflow`) through Accelerate's trackers.

The runner calls four functions: `accelerator_kwargs` when it builds the Accelerator, `start` once
the run folder exists, `log_epoch` with each metrics.jsonl record, and `finish` at the end. With
`tracking: none` every one of them does nothing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, get_args

from lobell.config import Config
from lobell.errors import LobellError

TRACKERS = get_args(Config.model_fields["tracking"].annotation)  # ("none", "tensorboard", "mlflow")
# Where each tracker's package comes from; checked up front, since Accelerate silently drops a
# tracker whose package is missing and the run would then log nothing.
_PACKAGES = {"tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
             "mlflow": (("mlflow",), "pip install mlflow")}
TENSORBOARD_DIR = "tensorboard"  # events go to RUN_DIR/tensorboard/
MLFLOW_EXPERIMENT = "lobell"


def accelerator_kwargs(tracking: str, run_dir: Path) -> dict[str, Any]:
    """Keyword arguments for `Accelerator(...)`: `log_with` and where local trackers write.

    Raises:
        LobellError: the tracker's package is not installed (one sentence with the pip command).
    """
    if tracking == "none":
        return {}
    check_installed(tracking)
    return {"log_with": tracking, "project_dir": str(run_dir)}


def check_installed(tracking: str) -> None:
    """Raises LobellError when `tracking` names a tracker whose package is missing."""
    if tracking == "none":
        return
    if tracking not in _PACKAGES:
        raise LobellError(f"tracking={tracking!r} is not one of {', '.join(TRACKERS)}")
    modules, install = _PACKAGES[tracking]
    if not any(importlib.util.find_spec(module) is not None for module in modules):
        raise LobellError(f"tracking: {tracking} needs the {modules[0]} package, which is not installed: {install}")


def start(accelerator, config: dict, run_dir: Path) -> None:
    """Open the tracker's run and record the resolved config (flattened: `optimizer.lr`, ...)."""
    if not accelerator.log_with:
        return
    names = {str(tracker) for tracker in accelerator.log_with}
    project = TENSORBOARD_DIR if names == {"tensorboard"} else MLFLOW_EXPERIMENT
    accelerator.init_trackers(project, config=flatten_config(config),
                              init_kwargs={"mlflow": {"run_name": Path(run_dir).name}})


def log_epoch(accelerator, record: dict, step: int | None = None) -> None:
    """Log one metrics.jsonl record: train loss, validation metrics, each group's LR, seconds.

    `step` defaults to the record's epoch (0 is before fine-tuning).
    """
    if not accelerator.log_with:
        return
    accelerator.log(epoch_values(record), step=record.get("epoch", 0) if step is None else step)


def log_final(accelerator, results: dict, step: int) -> None:
    """The best model's final validation and test metrics, under `final/...`."""
    if not accelerator.log_with:
        return
    values = {f"final/{split}/{name}": value for split in ("validation", "test")
              for name, value in (results.get(split) or {}).items() if _is_number(value)}
    if values:
        accelerator.log(values, step=step)


def finish(accelerator) -> None:
    """Flush and close every tracker (`end_training`)."""
    if accelerator.log_with:
        accelerator.end_training()


def epoch_values(record: dict) -> dict[str, float]:
    """{"train/loss", "validation/<metric>", "lr/<group>", "time/epoch_seconds"} from one record."""
    values: dict[str, float] = {}
    if _is_number(record.get("train_loss")):
        values["train/loss"] = float(record["train_loss"])
    for name, value in (record.get("validation") or {}).items():
        if _is_number(value):
            values[f"validation/{name}"] = float(value)
    for group, lr in (record.get("lrs") or {}).items():
        if _is_number(lr):
            values[f"lr/{group}"] = float(lr)
    if _is_number(record.get("seconds")):
        values["time/epoch_seconds"] = float(record["seconds"])
    return values


def flatten_config(config: dict, prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested config -> {"optimizer.lr": 5e-05, ...}; None and lists become text (what trackers accept)."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = "null" if value is None else json.dumps(value, default=str)
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = [
    "TRACKERS",
    "accelerator_kwargs",
    "check_installed",
    "epoch_values",
    "finish",
    "flatten_config",
    "log_epoch",
    "log_final",
    "start",
]
