"""report.html (plots embedded, numbers that match the predictions) and the model card (snippets that run)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import require_tool
from PIL import Image

from lobell.cli import main
from lobell.config import load_config
from lobell.report import write_model_card, write_report, write_run_documents
from lobell.training.runner import train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _train(overrides: list[str], *extra: str):
    settings = [*overrides, "epochs=2", "strategy=gradual", "data.max_train_samples=120", *extra]
    return train(load_config(None, settings), quiet=True).run_dir


class _Tables(HTMLParser):
    """Every <table id=...> as rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._current: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "id" in attrs:
            self._current = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self._current is not None:
            self._current.append([])
        elif tag in ("td", "th") and self._current is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._current[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._current = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _tables(text: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(text)
    return parser.tables


def _embedded_pngs(text: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_embeds_its_plots_and_the_confusion_matrix_matches_the_predictions(text_overrides):
    run = _train(text_overrides)
    report = write_report(run)
    text = report.read_text()
    embedded = _embedded_pngs(text)
    for name in ("report_curves.png", "report_lrs.png", "report_confusion.png"):
        data = (run / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and data in embedded, name
        with Image.open(io.BytesIO(data)) as image:
            assert image.width > 300 and image.height > 200
    assert "<script" not in text and "src=\"http" not in text  # self-contained: nothing to fetch

    rows = [json.loads(line) for line in (run / "predictions_validation.jsonl").read_text().splitlines()]
    counts = Counter((row["target"], row["prediction"]) for row in rows)
    tables = _tables(text)
    header, *body = tables["confusion-matrix"]
    shown = {(cells[0], predicted): int(cells[i + 1]) for cells in body for i, predicted in enumerate(header[1:])}
    assert shown == {(t, p): counts.get((t, p), 0) for t in ("neg", "pos") for p in ("neg", "pos")}
    assert sum(shown.values()) == len(rows) == 80

    per_class = {cells[0]: cells[1:] for cells in tables["per-class"][1:]}
    for label in ("neg", "pos"):
        true_positive = counts.get((label, label), 0)
        predicted = sum(v for (t, p), v in counts.items() if p == label)
        support = sum(v for (t, p), v in counts.items() if t == label)
        precision = true_positive / predicted if predicted else 0.0
        assert float(per_class[label][0]) == pytest.approx(precision, abs=5e-5)
        assert float(per_class[label][1]) == pytest.approx(true_positive / support, abs=5e-5)
        assert int(per_class[label][3]) == support

    worst = max(rows, key=lambda row: row["loss"])
    first = tables["top-losses"][1]
    assert first[1] == worst["input"] and float(first[5]) == pytest.approx(worst["loss"], abs=5e-5)
    stages = tables["stages"][1:]
    assert [cells[0] for cells in stages] == ["head only", "top 2 groups"]


def _synthetic_run(root: Path, task: str, predictions: list[dict], labels: list[str] | None,
                   modality: str = "text") -> Path:
    """A run folder written by hand: config, metrics, and the given predictions, nothing else."""
    root.mkdir(parents=True, exist_ok=True)
    extra = [f"output_dir={root}"] + (["model_weights=random"] if modality == "image" else [])
    (root / "config.yaml").write_text(load_config(None, [f"task={task}", *extra]).to_yaml())
    (root / "model").mkdir(exist_ok=True)
    (root / "model" / "lobell.json").write_text(json.dumps({"modality": modality, "base_model": "demo/base",
                                                            "task": task, "labels": labels}))
    (root / "predictions_validation.jsonl").write_text("".join(json.dumps(row) + "\n" for row in predictions))
    validation = {"rmse": 0.5, "loss": 0.25} if task.endswith("regression") else {"accuracy": 0.5, "loss": 0.7}
    (root / "metrics.json").write_text(json.dumps({"before": validation, "validation": validation, "best_epoch": 1}))
    return root


def test_report_escapes_inputs_and_notes_missing_files_instead_of_failing(tmp_path):
    rows = [{"index": 0, "input": "<script>alert('x')</script> & more", "target": "a", "prediction": "b",
             "probability": 0.9, "loss": 2.3},
            {"index": 1, "input": "fine", "target": "b", "prediction": "b", "probability": 0.8, "loss": 0.2}]
    run = _synthetic_run(tmp_path / "run", "text-classification", rows, ["a", "b"])
    text = write_report(run).read_text()
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in text
    for missing in ("metrics.jsonl is missing", "stages.json is missing", "lrs.json is missing"):
        assert missing in text
    assert _tables(text)["confusion-matrix"][1:] == [["a", "0", "1"], ["b", "0", "1"]]
    recipe = {cells[0]: cells[1] for cells in _tables(text)["recipe"][1:]}  # no recipe.json: from config.yaml
    assert list(recipe) == ["layers", "optimizer", "batch size", "epochs", "loss", "learning rate"]
    assert recipe["layers"].startswith("strategy full") and recipe["loss"].startswith("auto = cross-entropy")


def test_regression_report_has_a_residual_plot(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.normal(size=40)
    rows = [{"index": i, "input": f"text {i}", "target": float(t), "prediction": float(t + 0.1), "loss": 0.01}
            for i, t in enumerate(truth)]
    run = _synthetic_run(tmp_path / "run", "text-regression", rows, None)
    text = write_report(run).read_text()
    assert (run / "report_residuals.png").read_bytes() in _embedded_pngs(text)
    residuals = dict(_tables(text)["residuals"][1:])
    assert float(residuals["mean (bias)"]) == pytest.approx(0.1, abs=1e-4)
    assert "confusion-matrix" not in text


def test_image_inputs_show_as_thumbnails(tmp_path):
    rows = []
    for i in range(3):
        path = tmp_path / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((28, 28), 60 * i, dtype=np.uint8)).save(path)
        rows.append({"index": i, "input": str(path), "target": "a", "prediction": "b", "probability": 0.6,
                     "loss": 1.0 + i})
    rows.append({"index": 3, "input": str(tmp_path / "gone.png"), "target": "a", "prediction": "a",
                 "probability": 0.9, "loss": 0.1})
    run = _synthetic_run(tmp_path / "run", "image-classification", rows, ["a", "b"], modality="image")
    text = write_report(run).read_text()
    assert text.count('class="thumb"') == 3
    assert "gone.png" in text  # a missing image is named, not dropped


def test_model_card_describes_the_run_and_its_snippet_loads_the_model(text_overrides, capsys):
    run = _train(text_overrides)
    (run / "report.html").unlink()  # training wrote both: `lobell report` must write them again
    (run / "model" / "README.md").unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").is_file()
    card = (run / "model" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers" and "lobell" in front["tags"]
    assert "base_model" not in front  # a local folder is no hub name
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"{metrics['test']['accuracy']:.4f}" in card
    assert "2: `neg`, `pos`" in card and "| validation |" in card and "| 80 |" in card
    assert "| Layers | strategy.name=gradual [yours] | you set strategy.name=gradual |" in card
    assert "120 training examples" in card and "| train |" in card and "## Limitations" in card
    code = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1)
    capsys.readouterr()
    exec(compile(code, "model-card", "exec"), {})  # noqa: S102 - the card's own snippet is what is tested
    assert capsys.readouterr().out.strip() in ("neg", "pos")


@pytest.mark.parametrize("name, head", [("torchvision/resnet18", None),
                                        ("timm/test_resnet", {"hidden": [16], "dropout": 0.1, "batch_norm": True,
                                                              "activation": "relu"})])
def test_image_model_card_snippet_reproduces_the_models_outputs(tmp_path, name, head):
    vision = pytest.importorskip("lobell.models.vision")
    from lobell.data.image import open_rgb

    adapter = vision.VisionAdapter.from_pretrained(name, 3, weights="random", image_size=32, head=head)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(photo)
    run = _synthetic_run(tmp_path / "run", "image-classification", [], ["a", "b", "c"], modality="image")
    adapter.save(run / "model", {"task": "image-classification", "labels": ["a", "b", "c"]})
    code = re.search(r"```python\n(.*?)```", (write_model_card(run)).read_text(), re.DOTALL).group(1)
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code.replace('"photo.jpg"', repr(str(photo))), "model-card", "exec"), namespace)  # noqa: S102
    with torch.no_grad():
        expected = adapter.model.eval()(adapter.preprocessing.eval_transform()(open_rgb(photo)).unsqueeze(0))
    np.testing.assert_allclose(namespace["logits"].numpy(), expected.numpy(), atol=1e-5)
    assert out.getvalue().strip() in ("a", "b", "c")


def test_run_documents_never_raise_on_a_broken_run_folder(tmp_path):
    run = tmp_path / "broken"
    run.mkdir()
    (run / "metrics.json").write_text("{not json")
    (run / "metrics.jsonl").write_text('{"epoch": 0, "validation": {"accuracy": 0.5}}\n{"epoch": 1, "valid')
    logged, warned = [], []
    write_run_documents(run, logged.append, warned.append)
    assert any("model card not written" in line and "lobell report" in line for line in warned)
    assert any(line.startswith("report: ") for line in logged)
    text = (run / "report.html").read_text()
    assert "metrics.json could not be read" in text and "1 unreadable line(s) skipped" in text


def test_report_renders_in_headless_chromium(tmp_path):
    browser = require_tool("chromium", "apt-get install -y chromium")
    rows = [{"index": i, "input": f"review {i}", "target": "ab"[i % 2], "prediction": "ab"[i % 3 == 0],
             "probability": 0.7, "loss": 0.1 * i} for i in range(20)]
    run = _synthetic_run(tmp_path / "run", "text-classification", rows, ["a", "b"])
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "train_loss": 1 / (e + 1), "validation": {
        "accuracy": 0.5 + 0.1 * e, "loss": 1 / (e + 1)}}) + "\n" for e in range(3)))
    report = write_report(run)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,1600", f"--screenshot={shot}", report.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(shot) as image:
        grey = np.asarray(image.convert("L"))
    assert grey.shape == (1600, 1200)
    assert (grey < 250).mean() > 0.02, "the screenshot is blank"
    assert len(np.unique(grey)) > 50  # text, tables and plot colours, not a flat page


def test_every_training_run_leaves_a_report_and_a_model_card(text_overrides):
    run = train(load_config(None, [*text_overrides, "epochs=1", "data.max_train_samples=120"]), quiet=True).run_dir
    assert (run / "report.html").is_file() and (run / "model" / "README.md").is_file()
