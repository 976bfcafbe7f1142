"""`lobell export`: ONNX that matches PyTorch on real inputs with dynamic axes; bare safetensors weights."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lobell.cli import main
from lobell.config import load_config
from lobell.training.runner import train

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _run(text_overrides):
    settings = [*text_overrides, "epochs=1", "data.max_train_samples=120"]
    return train(load_config(None, settings), quiet=True).run_dir


def test_onnx_export_matches_pytorch_on_new_batch_and_sequence_sizes(text_overrides, sentiment_files, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = _run(text_overrides)
    capsys.readouterr()
    assert main(["export", str(run), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    path = run / "export" / "model.onnx"
    assert f"wrote {path}" in out and "dynamic axes: batch, sequence" in out
    assert float(re.search(r"max abs difference ([0-9.e+-]+)", out).group(1)) < 1e-4
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no temporary files left behind

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("input_ids", ["batch", "sequence"]),
                                                                 ("attention_mask", ["batch", "sequence"])]
    texts = pd.read_csv(sentiment_files["test"]).text.tolist()[:5] + ["good " * 30]  # 6 rows, 32+ tokens
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    with torch.no_grad():
        expected = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits.numpy()
    actual = session.run(None, {k: encoded[k].numpy() for k in ("input_ids", "attention_mask")})[0]
    assert actual.shape == (6, 2)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_safetensors_export_holds_exactly_the_models_weights(text_overrides, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification

    run = _run(text_overrides)
    target = tmp_path / "weights" / "merged.safetensors"
    assert main(["export", str(run), "--format", "safetensors", "--output", str(target)]) == 0
    state = AutoModelForSequenceClassification.from_pretrained(run / "model").state_dict()
    with safe_open(str(target), "pt") as handle:
        assert set(handle.keys()) == set(state)
        for name in state:
            torch.testing.assert_close(handle.get_tensor(name), state[name], rtol=0, atol=0)
        info = json.loads(handle.metadata()["lobell"])
    assert info["task"] == "text-classification" and info["labels"] == ["neg", "pos"]


def test_image_model_exports_with_a_dynamic_batch_axis(tmp_path):
    vision = pytest.importorskip("lobell.models.vision")
    from lobell.export import export_run

    run = tmp_path / "run"
    adapter = vision.VisionAdapter.from_pretrained("timm/test_resnet", 3, weights="random", image_size=32)
    adapter.save(_mkdir(run / "model"), {"task": "image-classification", "labels": ["a", "b", "c"]})
    (run / "config.yaml").write_text(load_config(None, ["task=image-classification", "model=timm/test_resnet",
                                                        "model_weights=random", "data.image_size=32",
                                                        f"output_dir={run}"]).to_yaml())
    rows = []
    for i in range(6):
        image = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(image)
        rows.append(json.dumps({"index": i, "input": str(image), "target": "a", "prediction": "a", "loss": 1.0}))
    (run / "predictions_validation.jsonl").write_text("\n".join(rows) + "\n")

    result = export_run(run, "onnx")
    assert result.dynamic_axes == ("batch",) and result.max_abs_difference < 1e-4 and result.inputs_checked == 6
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("pixel_values", ["batch", 3, 32, 32])]
    pixels = torch.randn(7, 3, 32, 32)
    with torch.no_grad():
        expected = adapter.model.eval()(pixels).numpy()
    np.testing.assert_allclose(session.run(None, {"pixel_values": pixels.numpy()})[0], expected, atol=1e-4)


def test_export_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run folder") and "\n" not in err


def _mkdir(path):
    path.mkdir(parents=True)
    return path
