"""Image runs end to end: training beats chance, predict/evaluate on folders, the model in plain timm/torchvision."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from PIL import Image
from vision_fixtures import (colour_folders, image_overrides, make_image_table, resnet18_weights,  # noqa: F401
                             tiny_vit_weights)

from lobell.cli import main
from lobell.config import load_config
from lobell.training.runner import train


@pytest.fixture(scope="module")
def vit_run(colour_folders, tiny_vit_weights, tmp_path_factory):  # noqa: F811
    """A tiny random ViT (layer norm only, so evaluation matches training) fitted on red vs blue."""
    run_dir = tmp_path_factory.mktemp("vit_run")
    cfg = load_config(None, image_overrides(colour_folders["train"], colour_folders["validation"], run_dir,
                                            {"model_weights": tiny_vit_weights, "epochs": 3}))
    return train(cfg, quiet=True)


def test_accuracy_rises_from_chance_to_near_perfect(vit_run):
    metrics = vit_run.metrics
    assert metrics["before"]["accuracy"] <= 0.75  # a fresh head knows nothing about the colours
    assert metrics["validation"]["accuracy"] >= 0.95
    assert (vit_run.run_dir / "model" / "model.safetensors").is_file()


def test_predict_on_a_folder_of_images(vit_run, colour_folders, tmp_path, capsys):  # noqa: F811
    output = tmp_path / "preds.csv"
    assert main(["predict", str(vit_run.run_dir), str(colour_folders["validation"]), "--output", str(output)]) == 0
    table = pd.read_csv(output)
    assert list(table.columns) == ["image", "prediction", "probability"] and len(table) == 20
    truth = [path.split("/")[-2] for path in table.image]
    assert (table.prediction == truth).mean() >= 0.95


def test_evaluate_on_class_folders(vit_run, colour_folders, capsys):  # noqa: F811
    assert main(["evaluate", str(vit_run.run_dir), str(colour_folders["validation"])]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["examples"] == 20 and metrics["accuracy"] >= 0.95


def test_saved_timm_model_predicts_like_lobell_in_plain_timm(vit_run, colour_folders, tmp_path):  # noqa: F811
    import timm

    output = tmp_path / "preds.csv"
    main(["predict", str(vit_run.run_dir), str(colour_folders["validation"]), "--output", str(output)])
    ours = pd.read_csv(output)
    # The model card's recipe, verbatim (docs/vision.md).
    model = timm.create_model(f"local-dir:{vit_run.run_dir / 'model'}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    labels = json.loads((vit_run.run_dir / "model" / "config.json").read_text())["label_names"]
    with torch.no_grad():
        probs = model(torch.stack([transform(Image.open(p).convert("RGB")) for p in ours.image])).softmax(-1)
    assert [labels[i] for i in probs.argmax(-1)] == ours.prediction.tolist()
    assert torch.allclose(probs.max(-1).values, torch.tensor(ours.probability.values, dtype=torch.float32), atol=1e-5)


def test_saved_torchvision_model_predicts_like_lobell_in_plain_torchvision(colour_folders, resnet18_weights, tmp_path):  # noqa: F811
    from safetensors.torch import load_file
    from torchvision import transforms

    run_dir = tmp_path / "run"
    cfg = load_config(None, image_overrides(colour_folders["train"], colour_folders["validation"], run_dir,
                                            {"model": "torchvision/resnet18", "model_weights": resnet18_weights,
                                             "epochs": 1, "augment": "none"}))
    train(cfg, quiet=True)
    main(["predict", str(run_dir), str(colour_folders["validation"]), "--output", str(tmp_path / "preds.csv")])
    ours = pd.read_csv(tmp_path / "preds.csv")
    # The model card's recipe, verbatim (docs/vision.md).
    config = json.loads((run_dir / "model" / "config.json").read_text())
    import torchvision

    model = torchvision.models.get_model(config["architecture"], num_classes=config["num_classes"],
                                         **config["model_args"])
    model.load_state_dict(load_file(run_dir / "model" / "model.safetensors"))
    model.eval()
    p = config["lobell_preprocessing"]
    transform = transforms.Compose([
        transforms.Resize(p["resize"], interpolation=transforms.InterpolationMode(p["interpolation"])),
        transforms.CenterCrop(p["size"]), transforms.ToTensor(), transforms.Normalize(p["mean"], p["std"])])
    with torch.no_grad():
        probs = model(torch.stack([transform(Image.open(f).convert("RGB")) for f in ours.image])).softmax(-1)
    assert [config["label_names"][i] for i in probs.argmax(-1)] == ours.prediction.tolist()
    assert torch.allclose(probs.max(-1).values, torch.tensor(ours.probability.values, dtype=torch.float32), atol=1e-5)


def test_csv_regression_and_multi_label_runs(tmp_path, tiny_vit_weights):  # noqa: F811
    rows = [{"colour": c, "redness": 1.0 if c == "red" else -1.0, "tags": "warm|red" if c == "red" else "cold"}
            for c in ["red", "blue"] * 20]
    table = make_image_table(tmp_path, rows)
    for task, column, metric in [("image-regression", "redness", "rmse"), ("image-multi-label", "tags", "f1_micro")]:
        run_dir = tmp_path / task
        cfg = load_config(None, image_overrides(table, table, run_dir, {
            "task": task, "data.label_column": column, "model_weights": tiny_vit_weights, "epochs": 3}))
        result = train(cfg, quiet=True)
        before, after = result.metrics["before"][metric], result.metrics["validation"][metric]
        assert (after < before) if metric == "rmse" else (after > before)
        info = json.loads((run_dir / "model" / "lobell.json").read_text())
        assert info["task"] == task


def test_mixup_strong_augment_and_custom_head_train(colour_folders, tiny_vit_weights, tmp_path):  # noqa: F811
    cfg = load_config(None, image_overrides(colour_folders["train"], colour_folders["validation"], tmp_path, {
        "model_weights": tiny_vit_weights, "augment": "strong", "mixup.mixup_alpha": 0.4,
        "mixup.cutmix_alpha": 1.0, "head.hidden": "[16]", "strategy": "two-stage", "strategy.frozen_epochs": 1,
        "epochs": 2}))
    result = train(cfg, quiet=True)
    stages = json.loads((tmp_path / "stages.json").read_text())
    assert [s["name"] for s in stages] == ["head only", "all groups"]
    assert result.metrics["validation"]["loss"] < result.metrics["before"]["loss"]
