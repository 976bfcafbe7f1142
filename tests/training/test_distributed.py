"""Two CPU processes (gloo) through the real launch path: `lobell train --processes 2`."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from lobell.launch import launch_command


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "lobell.cli", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _lines(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_launch_uses_accelerate_launch():
    command = launch_command(2, ["train", "x.yaml"])
    assert command[1:3] == ["-m", "accelerate.commands.launch"] and "--num_processes" in command
    assert command[-3:] == ["lobell.cli", "train", "x.yaml"]


def test_two_processes_stay_in_sync_across_gradual_stages(text_overrides, sentiment_files, tmp_path):
    run = tmp_path / "ddp"
    overrides = [o for o in text_overrides if not o.startswith(("output_dir", "batch_size"))]
    proc = _run(["train", "--processes", "2", *overrides, "strategy=gradual", "batch_size=8", "epochs=3",
                 "early_stopping.patience=null", f"output_dir={run}"])
    assert "2 process(es)" in proc.stderr
    stages = json.loads((run / "stages.json").read_text())
    assert [len(s["trainable_groups"]) for s in stages] == [1, 2, 3]
    assert all(s["ranks_in_sync"] for s in stages), "parameters differed across processes"
    assert [line["epoch"] for line in _lines(run)] == [0, 1, 2, 3], "only the main process writes metrics"
    validation = pd.read_csv(sentiment_files["validation"])
    predictions = (run / "predictions_validation.jsonl").read_text().splitlines()
    assert len(predictions) == len(validation), "every validation example counted exactly once"
    assert [json.loads(p)["input"] for p in predictions] == validation.text.tolist()


def test_two_processes_match_one_process_with_the_same_global_batch(text_overrides, tmp_path):
    overrides = [o for o in text_overrides if not o.startswith(("output_dir", "batch_size"))] + [
        "epochs=3", "early_stopping.patience=null", "data.group_by_length=false"]
    _run(["train", "--quiet", *overrides, "batch_size=16", f"output_dir={tmp_path / 'one'}"])
    _run(["train", "--quiet", "--processes", "2", *overrides, "batch_size=8", f"output_dir={tmp_path / 'two'}"])
    one, two = _lines(tmp_path / "one"), _lines(tmp_path / "two")
    for a, b in zip(one[1:], two[1:]):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.1, (a["train_loss"], b["train_loss"])
    assert one[-1]["validation"]["accuracy"] > 0.85 and two[-1]["validation"]["accuracy"] > 0.85


def test_early_stopping_is_obeyed_by_every_process(text_overrides, tmp_path):
    run = tmp_path / "stop"
    overrides = [o for o in text_overrides if not o.startswith(("output_dir", "batch_size"))]
    _run(["train", "--quiet", "--processes", "2", *overrides, "batch_size=8", "optimizer.lr=1e-12", "epochs=8",
          "early_stopping.patience=1", "early_stopping.monitor=loss", f"output_dir={run}"], timeout=240)
    epochs = [line["epoch"] for line in _lines(run)]
    assert epochs[-1] < 8 and (run / "model").is_dir()
