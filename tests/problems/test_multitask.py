"""Several heads on one backbone: config, packed targets, weighted loss, per-task metrics, predict, reload, card."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import sentiment_rows
from PIL import Image

from lobell.cli import main
from lobell.config import load_config
from lobell.data.multitask import TaskHead, TaskHeads
from lobell.errors import LobellError
from lobell.models.multitask import MultiTaskHeads, MultiTaskLoss, build_multitask_adapter
from lobell.predict import Predictor
from lobell.tasks import load_task_splits
from lobell.training.runner import train

TEXT_TASKS = "tasks=[{name: sentiment, label_column: label}, {name: score, kind: regression, loss_weight: 0.5}]"


def _scored_rows(n: int, seed: int) -> pd.DataFrame:
    """Sentiment rows plus `score` (+1 positive, -1 negative, +0.5 with 'very') and `topics` (fixture words present)."""
    frame = sentiment_rows(n, seed)
    words = [text.split() for text in frame.text]
    frame["score"] = [(1.0 if label == "pos" else -1.0) + 0.5 * ("very" in w) for w, label in zip(words, frame.label)]
    frame["topics"] = ["|".join(t for t in ("film", "plot") if t in w) for w in words]
    return frame


@pytest.fixture()
def scored_files(tmp_path) -> dict:
    files = {}
    for name, n, seed in [("train", 400, 1), ("validation", 80, 2), ("test", 80, 3)]:
        files[name] = tmp_path / f"{name}.csv"
        _scored_rows(n, seed).to_csv(files[name], index=False)
    return files


@pytest.fixture()
def text_multitask(text_overrides, scored_files) -> list[str]:
    data = [f"data.{name}={path}" for name, path in scored_files.items()]
    return [*text_overrides, *data, TEXT_TASKS]


def test_tasks_config_defaults_and_errors(tiny_bert):
    cfg = load_config(None, [f"model={tiny_bert}", TEXT_TASKS])
    assert cfg.early_stopping.monitor == "loss"  # the weighted sum, unless you pick a task's metric
    assert cfg.tasks[1].column == "score" and cfg.tasks[0].column == "label"
    assert load_config(None, [TEXT_TASKS, "early_stopping.monitor=score/rmse"]).early_stopping.monitor == "score/rmse"
    for overrides, message in [([TEXT_TASKS, "early_stopping.monitor=score/accuracy"], "score/accuracy"),
                               (["tasks=[{name: a}, {name: a}]"], "'a' is used twice"),
                               ([TEXT_TASKS, "loss=bce"], "loss.name applies to single-task runs"),
                               (["tasks=[{name: a, loss_weight: 0}]"], "every loss_weight is 0"),
                               (["tasks=[{name: a, knd: regression}]"], "did you mean 'kind'"),
                               ([TEXT_TASKS, "distill.teacher=runs/teacher"], "one soft loss cannot match")]:
        with pytest.raises(LobellError, match=re.escape(message)):
            load_config(None, overrides)


def test_targets_are_packed_one_block_per_task(text_multitask):
    tasks = ("tasks=[{name: sentiment, label_column: label}, {name: topics, kind: multi-label}, "
             "{name: score, kind: regression}]")
    cfg = load_config(None, [*text_multitask, tasks])
    splits = load_task_splits(cfg, "text", "classification")
    heads = splits.labels
    assert isinstance(heads, TaskHeads) and list(heads) == ["sentiment", "topics", "score"]
    assert [t.labels for t in heads.tasks] == [["neg", "pos"], ["film", "plot"], None]
    assert heads.logit_width == 5 and splits.train.targets.shape == (400, 4)  # class id, 2 multi-hot, value
    frame = _scored_rows(400, 1)
    row = splits.train.targets[0]
    assert row[0] == ["neg", "pos"].index(frame.label[0]) and row[3] == pytest.approx(frame.score[0])
    assert list(row[1:3]) == [float(t in frame.topics[0].split("|")) for t in ("film", "plot")]


def test_a_missing_task_column_names_the_task_and_the_columns(text_multitask):
    tasks = "tasks=[{name: sentiment, label_column: label}, {name: stars, kind: regression}]"
    cfg = load_config(None, [*text_multitask, tasks])
    with pytest.raises(LobellError, match=r"no column 'stars' \(tasks\[1\].label_column of task 'stars'\).*"
                                          r"its columns are: text, label, score, topics"):
        load_task_splits(cfg, "text", "classification")


def test_loss_weights_weight_each_tasks_loss():
    heads = TaskHeads([TaskHead("a", "classification", "a", 2.0, ["x", "y", "z"]),
                       TaskHead("b", "multi-label", "b", 0.5, ["p", "q"]),
                       TaskHead("c", "regression", "c", 0.0)])
    torch.manual_seed(0)
    logits = torch.randn(6, 6, requires_grad=True)
    classes, hot, values = torch.randint(0, 3, (6, 1)).float(), torch.randint(0, 2, (6, 2)).float(), torch.randn(6, 1)
    targets = torch.cat([classes, hot, values], 1)
    loss = MultiTaskLoss(heads)(logits, targets)
    expected = (2.0 * F.cross_entropy(logits[:, :3], targets[:, 0].long())
                + 0.5 * F.binary_cross_entropy_with_logits(logits[:, 3:5], targets[:, 1:3]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[:, 5] == 0)  # weight 0: the regression head gets no gradient
    assert torch.all(logits.grad[:, :5].abs().sum(0) > 0)


def test_heads_form_the_head_group_and_reload_with_identical_logits(tiny_bert, tmp_path):
    from lobell.models.text import TextAdapter

    tasks = "tasks=[{name: sentiment}, {name: topics, kind: multi-label}, {name: score, kind: regression}]"
    cfg = load_config(None, [f"model={tiny_bert}", "head.hidden=[8]", tasks])
    adapter = build_multitask_adapter(cfg, "text", None)  # no data: two placeholder labels per task
    heads = adapter.model.classifier
    assert isinstance(heads, MultiTaskHeads) and list(heads.heads) == ["sentiment", "topics", "score"]
    head_group = adapter.layer_map.groups[-1]
    assert head_group.is_head
    assert {f"classifier.{n}" for n, _ in heads.named_parameters()} <= set(head_group.param_names)
    assert all(not name.startswith("classifier") for g in adapter.layer_map.groups[:-1] for name in g.param_names)
    batch = {"input_ids": torch.randint(5, 30, (4, 9)), "attention_mask": torch.ones(4, 9, dtype=torch.long)}
    adapter.model.train()
    adapter.forward(adapter.model, batch)  # batch norm statistics move away from their initial values
    adapter.save(tmp_path, {"labels": list(heads.heads)})
    again = TextAdapter.load(tmp_path)
    assert torch.equal(adapter.forward(adapter.model.eval(), batch), adapter.forward(again.model, batch))
    assert again.model.config.id2label[0] == "sentiment:a" and again.head["tasks"][2]["kind"] == "regression"


def test_text_multitask_run_learns_each_task_and_predicts_every_head(text_multitask, scored_files, tmp_path):
    result = train(load_config(None, [*text_multitask, "epochs=3"]), quiet=True)
    run, before, after = result.run_dir, result.metrics["before"], result.metrics["validation"]
    assert after["sentiment/accuracy"] > 0.85 > before["sentiment/accuracy"]
    spread = float(_scored_rows(80, 2).score.std(ddof=0))  # the rmse of always predicting the mean
    assert after["score/rmse"] < 0.5 * spread < before["score/rmse"]
    assert after["loss"] == pytest.approx(after["sentiment/loss"] + 0.5 * after["score/loss"], rel=1e-4)
    assert {"sentiment/f1_macro", "score/r2"} <= set(result.metrics["test"])
    record = json.loads((run / "predictions_validation.jsonl").read_text().splitlines()[0])
    assert set(record["sentiment"]) == {"target", "prediction", "probability"} and "prediction" in record["score"]

    output = tmp_path / "predictions.csv"
    assert main(["predict", str(run), str(scored_files["test"]), "--output", str(output), "--quiet"]) == 0
    table = pd.read_csv(output)
    assert list(table.columns) == ["text", "sentiment/prediction", "sentiment/probability", "score/prediction"]
    truth = pd.read_csv(scored_files["test"])
    assert (table["sentiment/prediction"] == truth.label).mean() > 0.85
    metrics = Predictor.from_run(run).evaluate_file(scored_files["test"])
    assert metrics["sentiment/accuracy"] == pytest.approx(result.metrics["test"]["sentiment/accuracy"])
    assert metrics["score/rmse"] == pytest.approx(result.metrics["test"]["score/rmse"], rel=1e-4)


def test_text_multitask_model_card_loads_backbone_and_heads_with_plain_transformers(text_multitask, scored_files):
    run = train(load_config(None, [*text_multitask, "epochs=1", "head.hidden=[8]"]), quiet=True).run_dir
    texts = pd.read_csv(scored_files["test"]).text.tolist()[:6]
    expected = Predictor.from_run(run).logits(texts)
    code = re.search(r"```python\n(.*?)```", (run / "model" / "README.md").read_text(), re.DOTALL).group(1)
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code, "model-card", "exec"), namespace)  # noqa: S102 - the card's own snippet is what is tested
    printed = out.getvalue().splitlines()
    assert printed[0].split()[0] == "sentiment" and printed[0].split()[1] in ("neg", "pos")
    assert printed[1].split()[0] == "score" and np.isfinite(float(printed[1].split()[1]))
    model, tokenizer = namespace["model"], namespace["tokenizer"]
    with torch.no_grad():
        plain = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(plain, expected, atol=1e-5)


# Images: red, blue, both (purple) or neither (grey); `tags` names the channels that are on and
# `brightness` is the mean pixel value, so a multi-label, a regression and a class task all follow from the pixels.
_COLOURS = {"red": (200, 30, 30), "blue": (30, 30, 200), "purple": (200, 30, 200), "grey": (30, 30, 30)}


def _image_table(root, n: int, seed: int):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour = list(_COLOURS)[i % 4]
        scale = rng.uniform(0.5, 1.2)
        pixels = np.clip(np.array(_COLOURS[colour]) * scale + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        tags = "|".join(tag for tag in ("red", "blue") if colour in (tag, "purple"))
        rows.append({"image": f"images/{i}.png", "colour": colour, "tags": tags, "brightness": pixels.mean() / 255})
    path = root / "data.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_image_multitask_run_learns_each_task_and_reloads(tmp_path):
    train_file, validation_file = _image_table(tmp_path / "train", 96, 1), _image_table(tmp_path / "val", 32, 2)
    settings = {"task": "image-classification", "model": "timm/test_vit", "model_weights": "random",
                "data.train": train_file, "data.validation": validation_file, "data.image_size": 32, "augment": "none",
                "optimizer.lr": 2e-3, "strategy": "full", "strategy.backbone_lr_scale": 1.0, "scheduler": "constant",
                "batch_size": 16, "epochs": 4, "precision": "fp32", "output_dir": tmp_path / "run", "recipe": False,
                "early_stopping.patience": "null",
                "tasks": "[{name: colour}, {name: tags, kind: multi-label}, {name: brightness, kind: regression}]"}
    result = train(load_config(None, [f"{k}={v}" for k, v in settings.items()]), quiet=True)
    before, after = result.metrics["before"], result.metrics["validation"]
    assert after["colour/accuracy"] > 0.6 and after["colour/accuracy"] > before["colour/accuracy"]
    assert after["tags/f1_micro"] > 0.8 > before["tags/accuracy"]
    spread = float(pd.read_csv(validation_file).brightness.std(ddof=0))
    assert after["brightness/rmse"] < 0.7 * spread

    output = tmp_path / "predictions.csv"
    assert main(["predict", str(result.run_dir), str(tmp_path / "val" / "images"), "--output", str(output),
                 "--quiet"]) == 0
    columns = list(pd.read_csv(output).columns)
    assert columns == ["image", "colour/prediction", "colour/probability", "tags/prediction", "tags/probability_blue",
                       "tags/probability_red", "brightness/prediction"]
    lines = (result.run_dir / "predictions_validation.jsonl").read_text().splitlines()
    predictions = [json.loads(line) for line in lines]
    inputs = [row["input"] for row in predictions]
    reloaded = Predictor.from_run(result.run_dir).logits(inputs)
    values = np.array([row["brightness"]["prediction"] for row in predictions])
    np.testing.assert_allclose(reloaded[:, -1], values, atol=1e-5)  # the reloaded model gives the run's outputs

    card = (result.run_dir / "model" / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1).replace('"photo.jpg"', repr(inputs[0]))
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code, "model-card", "exec"), namespace)  # noqa: S102 - plain timm + torch: backbone and heads
    np.testing.assert_allclose(namespace["logits"].numpy()[0], reloaded[0], atol=1e-5)
    assert [line.split()[0] for line in out.getvalue().splitlines()] == ["colour", "tags", "brightness"]


def test_text_multitask_with_lora_learns_both_heads_and_exports_to_onnx(text_multitask, capsys):
    result = train(load_config(None, [*text_multitask, "strategy=lora", "lora.r=4", "epochs=5", "optimizer.lr=3e-2"]), quiet=True)
    before, after = result.metrics["before"], result.metrics["validation"]
    assert after["sentiment/accuracy"] > 0.75 > before["sentiment/accuracy"]
    assert after["score/rmse"] < before["score/rmse"]
    stage = json.loads((result.run_dir / "stages.json").read_text())[0]
    assert "head" in stage["trainable_groups"] and any(g.startswith("lora ") for g in stage["trainable_groups"])
    capsys.readouterr()
    assert main(["export", str(result.run_dir), "--format", "onnx"]) == 0  # merged adapters, both heads
    assert float(re.search(r"max abs difference ([0-9.e+-]+)", capsys.readouterr().out).group(1)) < 1e-4
