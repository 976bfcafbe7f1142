"""The CLI contract: train, predict, evaluate, validate, layers; user errors exit 2 with one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from lobell.cli import main


def test_train_then_predict_and_evaluate(text_overrides, sentiment_files, tmp_path, capsys):
    assert main(["train", "--quiet", *text_overrides]) == 0
    run = tmp_path / "run"
    assert "run folder" in capsys.readouterr().out
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run), str(sentiment_files["test"]), "--output", str(out)]) == 0
    preds = pd.read_csv(out)
    truth = pd.read_csv(sentiment_files["test"])
    assert len(preds) == len(truth) and list(preds.columns) == ["text", "prediction", "probability"]
    assert ((preds.prediction == truth.label).mean()) > 0.85
    # The probability is the predicted class's softmax, as the run's own predictions file says for the
    # same texts (a 2-class argmax probability is always >= 0.5, so that alone would prove nothing).
    own = {r["input"]: r["probability"] for r in map(json.loads, (run / "predictions_test.jsonl").read_text().splitlines())}
    assert preds.probability.tolist() == pytest.approx([own[text] for text in preds.text], abs=1e-4)
    assert preds.probability.nunique() > 1
    capsys.readouterr()
    assert main(["evaluate", str(run), str(sentiment_files["test"])]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["examples"] == len(truth)
    assert metrics["accuracy"] == pytest.approx((preds.prediction == truth.label).mean())


def test_train_from_yaml_file_with_overrides(text_overrides, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("epochs: 1\nbatch_size: 8\n")
    assert main(["train", "--quiet", str(config), *text_overrides, "epochs=1"]) == 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_validate_checks_data_without_training(text_overrides, capsys):
    assert main(["validate", *text_overrides]) == 0
    out = capsys.readouterr().out
    assert "data ok: train 400, validation 80, test 80; 2 labels: neg, pos" in out
    assert "5 layer groups" in out


def test_layers_prints_the_map(tiny_bert, capsys):
    assert main(["layers", f"model={tiny_bert}", "strategy=feature-extraction"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[1] == "bert.embeddings" and out[-1].split()[1] == "head"
    assert out[-1].split()[-1] == "yes" and out[2].split()[-1] == "no"


@pytest.mark.parametrize("args, fragment", [
    (["train", "optimiser.lr=1"], "unknown key 'optimiser'"),
    (["train", "data.train=missing.csv"], "data file 'missing.csv' does not exist"),
    (["predict", "nowhere", "x.csv"], "run folder 'nowhere' does not exist"),
])
def test_user_errors_are_one_line_exit_2(args, fragment, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err


def test_offline_model_miss_names_the_model(text_overrides, capsys):
    assert main(["train", *text_overrides, "model=no-such-org/no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model 'no-such-org/no-such-model' is not a local folder") and "\n" not in err
    assert "set model: DIR" in err


def test_missing_column_suggests_the_nearest(text_overrides, capsys):
    assert main(["train", *text_overrides, "data.text_column=txt"]) == 2
    err = capsys.readouterr().err
    assert "no column 'txt' (data.text_column) (did you mean 'text'?)" in err and "its columns are: text, label" in err


def test_console_script_offline_model_miss_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lobell.cli", "layers", "model=bert-base-uncased"],
                          capture_output=True, text=True, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "model 'bert-base-uncased'" in proc.stderr
