"""Resume: a run killed with SIGKILL mid-epoch ends exactly like an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lobell.cli import main
from lobell.config import load_config
from lobell.training.checkpoint import RunLock, latest_checkpoint
from lobell.training.runner import train


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lobell.cli", *args]


def _final(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("timing")
    return metrics


@pytest.mark.parametrize("multitask", [False, True], ids=["single-task", "multi-task"])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(text_overrides, tmp_path, multitask):
    common = [o for o in text_overrides if not o.startswith("output_dir")] + [
        "epochs=3", "checkpoint.every_steps=4", "early_stopping.patience=null"]
    if multitask:  # a classification and a regression head on the same data, packed targets
        from test_multitask import TEXT_TASKS, _scored_rows

        for name, n, seed in [("train", 400, 1), ("validation", 80, 2), ("test", 80, 3)]:
            _scored_rows(n, seed).to_csv(tmp_path / f"{name}.csv", index=False)
            common.append(f"data.{name}={tmp_path / f'{name}.csv'}")
        common.append(TEXT_TASKS)
    reference = tmp_path / "reference"
    assert main(["train", "--quiet", *common, f"output_dir={reference}"]) == 0

    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli("train", "--quiet", *common, f"output_dir={run}"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        latest = latest_checkpoint(run)
        if latest is not None:
            state = json.loads((latest / "state.json").read_text())
            if state["epoch"] >= 1 and state["step_in_epoch"] > 0:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed mid-epoch"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists()
    assert (run / ".lock").exists(), "a killed run leaves its lock behind"

    resumed = subprocess.run(_cli("train", "--resume", str(run)), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert _final(run) == _final(reference)
    assert ("score/rmse" in _final(run)["validation"]) is multitask
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2, 3]


def test_a_checkpoint_cut_short_is_ignored(text_overrides, tmp_path):
    run = tmp_path / "run"
    overrides = [o for o in text_overrides if not o.startswith("output_dir")] + [f"output_dir={run}", "epochs=2"]
    train(load_config(None, overrides), quiet=True)
    good = latest_checkpoint(run)
    partial = run / "checkpoints" / ".step-000099999.abcd.tmp"  # what a kill during a write leaves
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    assert latest_checkpoint(run) == good


def test_second_run_in_the_same_folder_is_refused_while_the_first_lives(text_overrides, tmp_path):
    run = tmp_path / "run"
    lock = RunLock(run)
    lock.acquire()
    try:
        code = main(["train", *text_overrides[:-1], f"output_dir={run}"])
        assert code == 2
    finally:
        lock.release()
    # A lock whose owner is dead is taken over.
    (run / ".lock").write_text(json.dumps({"pid": 999999, "host": os.uname().nodename}))
    assert main(["train", "--quiet", *text_overrides[:-1], f"output_dir={run}", "epochs=1"]) == 0
    assert not (run / ".lock").exists()


def test_a_finished_run_folder_is_not_overwritten(text_overrides, tmp_path, capsys):
    assert main(["train", "--quiet", *text_overrides, "epochs=1"]) == 0
    before = (tmp_path / "run" / "model" / "model.safetensors").read_bytes()
    assert main(["train", *text_overrides, "epochs=1"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "model" / "model.safetensors").read_bytes() == before


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_writes_a_checkpoint_and_says_how_to_resume(text_overrides, tmp_path):
    run = tmp_path / "run"
    common = [o for o in text_overrides if not o.startswith("output_dir")] + [f"output_dir={run}", "epochs=30",
                                                                               "early_stopping.patience=null"]
    proc = subprocess.Popen(_cli("train", *common), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and latest_checkpoint(run) is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"resume with: lobell train --resume {run}" in err
    assert latest_checkpoint(run) is not None
