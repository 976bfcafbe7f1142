"""object-detection end to end through the normal runner: learning, frozen groups, predict -> evaluate."""

from __future__ import annotations

import json

import pytest
import torch

from lobell.cli import main
from lobell.config import load_config
from lobell.data.detection import read_detection
from lobell.data.detection.scenes import make_scenes
from lobell.detection_metrics import DetectionMetrics
from lobell.training.runner import train

CLASSES = ["trouser", "bag"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """32 training and 12 validation scenes at 64 px, one Fashion-MNIST item each: learnable in a few epochs."""
    return make_scenes(tmp_path_factory.mktemp("scenes"), {"train": 32, "validation": 12}, size=64, classes=CLASSES,
                       max_objects=1)


def _overrides(scenes, run_dir, extra: dict) -> list[str]:
    base = {"task": "object-detection", "model": "torchvision/fasterrcnn", "backbone": "timm/test_resnet",
            "backbone_weights": "random", "data.train": scenes["train"], "data.validation": scenes["validation"],
            "data.image_size": 64, "batch_size": 4, "optimizer.name": "sgd", "optimizer.lr": 0.02,
            "strategy.backbone_lr_scale": 1.0, "precision": "fp32", "augment": "none", "output_dir": run_dir,
            "fpn_channels": 32,
            **extra}
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="module")
def fitted(scenes, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("detection_run") / "run"
    cfg = load_config(None, _overrides(scenes, run_dir, {"epochs": 6}))
    return train(cfg, quiet=True)


def test_the_loss_falls_and_map_rises(fitted):
    lines = [json.loads(line) for line in (fitted.run_dir / "metrics.jsonl").read_text().splitlines() if line]
    losses = [line["train_loss"] for line in lines if "train_loss" in line]
    assert losses[-1] < 0.8 * losses[0]
    before, after = fitted.metrics["before"], fitted.metrics["validation"]
    # measured: map_50 0.002 -> 0.034, map 0.0003 -> 0.007 after 48 steps of a random tiny backbone
    assert after["map_50"] > before["map_50"] + 0.01 and after["map"] > before["map"]
    assert set(after["ap_per_class"]) == set(CLASSES)
    saved = json.loads((fitted.run_dir / "model" / "config.json").read_text())
    assert saved["label_names"] == CLASSES and saved["detector"] == "fasterrcnn"
    records = [json.loads(line) for line in (fitted.run_dir / "predictions_validation.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {"true_boxes", "true_labels", "boxes", "labels", "scores"} <= set(records[0])


def test_predict_then_evaluate_give_the_same_map(fitted, scenes, tmp_path, capsys):
    folder = scenes["validation"].parent / "images" / "validation"
    output = tmp_path / "boxes.jsonl"
    drawn = tmp_path / "drawn"
    assert main(["predict", str(fitted.run_dir), str(folder), "--output", str(output), "--threshold", "0",
                 "--draw", str(drawn), "--quiet"]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 12 and len(list(drawn.glob("*.png"))) == 12
    truth = {s.image: s for s in read_detection(scenes["validation"]).samples}
    metrics = DetectionMetrics(CLASSES)
    for row in rows:
        sample = next(s for path, s in truth.items() if path.endswith(row["image"].split("/")[-1]))
        metrics.update([{"boxes": torch.tensor(row["boxes"]).reshape(-1, 4), "scores": torch.tensor(row["scores"]),
                         "labels": torch.tensor([CLASSES.index(n) for n in row["labels"]], dtype=torch.long)}],
                       [{"boxes": torch.from_numpy(sample.boxes), "labels": torch.from_numpy(sample.labels)}])
    from_predict = metrics.compute()
    capsys.readouterr()
    assert main(["evaluate", str(fitted.run_dir), str(scenes["validation"]), "--quiet"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["examples"] == 12
    assert evaluated["map"] == pytest.approx(from_predict["map"], abs=2e-3)  # boxes.jsonl rounds to 0.01 px
    assert evaluated["map"] == pytest.approx(fitted.metrics["validation"]["map"], abs=2e-3)


def test_frozen_backbone_groups_stay_bit_identical(scenes, tmp_path):
    import timm
    from safetensors.torch import load_file, save_file

    torch.manual_seed(1)
    save_file(timm.create_model("test_resnet").state_dict(), tmp_path / "backbone.safetensors")
    cfg = load_config(None, _overrides(scenes, tmp_path / "run", {
        "epochs": 1, "strategy": "feature-extraction", "backbone_weights": tmp_path / "backbone.safetensors",
        "data.max_train_samples": 8}))
    run = train(cfg, quiet=True)
    start = load_file(tmp_path / "backbone.safetensors")
    end = load_file(run.run_dir / "model" / "model.safetensors")
    body = {k.removeprefix("backbone.body."): v for k, v in end.items() if k.startswith("backbone.body.")}
    assert body and all(torch.equal(v, start[k]) for k, v in body.items())  # weights and frozen BN statistics
    fresh = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert any(k.startswith("roi_heads.") for k in fresh)


def test_bad_config_keys_are_one_sentence(scenes, tmp_path):
    with pytest.raises(Exception, match="backbone applies to object-detection"):
        load_config(None, ["task=image-classification", "backbone=timm/resnet18"])
    with pytest.raises(Exception, match="is not a metric of object-detection"):
        load_config(None, _overrides(scenes, tmp_path, {"early_stopping.monitor": "accuracy2"}))
