"""`tracking: tensorboard` through Accelerate's trackers: metrics, group LRs and the config reach event files."""

from __future__ import annotations

import importlib
import importlib.util

import pytest
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from lobell import tracking
from lobell.config import load_config
from lobell.errors import LobellError

RECORDS = [{"epoch": 0, "validation": {"accuracy": 0.5, "loss": 0.70}},
           {"epoch": 1, "stage": 0, "train_loss": 0.65, "validation": {"accuracy": 0.75, "loss": 0.55},
            "lrs": {"bert.embeddings": 2e-5, "head": 5e-5}, "seconds": 1.5},
           {"epoch": 2, "stage": 0, "train_loss": 0.40, "validation": {"accuracy": 0.875, "loss": 0.35},
            "lrs": {"bert.embeddings": 1e-5, "head": 2.5e-5}, "seconds": 1.4}]


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_gets_metrics_group_lrs_and_the_config(tmp_path):
    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "run"
    cfg = load_config(None, ["tracking=tensorboard", "optimizer.lr=3e-5", f"output_dir={run_dir}"])
    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=True, **tracking.accelerator_kwargs(cfg.tracking, run_dir))
    tracking.start(accelerator, cfg.model_dump(mode="json"), run_dir)
    for record in RECORDS:
        tracking.log_epoch(accelerator, record)
    tracking.log_final(accelerator, {"validation": {"accuracy": 0.875}, "test": {"accuracy": 0.8}}, step=2)
    tracking.finish(accelerator)

    folder = run_dir / tracking.TENSORBOARD_DIR
    assert list(folder.glob("events.out.tfevents.*"))
    scalars = _scalars(folder)
    assert [(step, round(v, 4)) for step, v in scalars["validation/accuracy"]] == [(0, 0.5), (1, 0.75), (2, 0.875)]
    assert [step for step, _ in scalars["train/loss"]] == [1, 2]
    assert scalars["lr/head"][0] == (1, pytest.approx(5e-5)) and scalars["lr/bert.embeddings"][1][0] == 2
    assert scalars["final/test/accuracy"] == [(2, pytest.approx(0.8))]
    hparams = next(folder.glob("*/hparams.yml")).read_text()
    assert "optimizer.lr: 3.0e-05" in hparams and "tracking: tensorboard" in hparams


def test_tracking_none_does_nothing(tmp_path):
    assert tracking.accelerator_kwargs("none", tmp_path) == {}
    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=True)
    tracking.start(accelerator, {}, tmp_path)
    tracking.log_epoch(accelerator, RECORDS[1])
    tracking.finish(accelerator)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_tracker_package_is_one_sentence_naming_the_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    with pytest.raises(LobellError) as error:
        tracking.accelerator_kwargs("tensorboard", tmp_path)
    message = str(error.value)
    assert "pip install tensorboard" in message and "\n" not in message


def test_the_config_key_is_checked():
    assert load_config(None, []).tracking == "none"
    assert load_config(None, ["tracking=mlflow"]).tracking == "mlflow"
    with pytest.raises(LobellError, match="tracking"):
        load_config(None, ["tracking=wandb"])


def test_flattened_config_holds_only_values_trackers_accept():
    flat = tracking.flatten_config(load_config(None, []).model_dump(mode="json"))
    assert flat["optimizer.lr"] == 5e-5 and flat["data.validation"] == "null" and flat["head"] == "null"
    assert all(isinstance(v, (str, int, float, bool)) for v in flat.values())


def test_a_training_run_logs_every_epoch_to_tensorboard(text_overrides, tmp_path):
    from lobell.training.runner import train

    run = train(load_config(None, [*text_overrides, "epochs=1", "data.max_train_samples=100",
                                   "tracking=tensorboard"]), quiet=True).run_dir
    scalars = _scalars(run / tracking.TENSORBOARD_DIR)
    assert [step for step, _ in scalars["validation/accuracy"]] == [0, 1]
    assert "lr/head" in scalars and "train/loss" in scalars


def test_validate_names_a_missing_tracker_package(monkeypatch):
    from lobell.validate import validate_run_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(LobellError, match="tracking: mlflow needs the mlflow package"):
        validate_run_config(load_config(None, ["tracking=mlflow"]))
