"""Shared pieces of the adversarial suite: child processes with known signal dispositions, waiting for
observable events (never a fixed sleep racing the run), and run folders compared apart from timing."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import sentiment_rows

STEPS_PER_EPOCH = 10  # 160 training rows / batch_size 16
EPOCHS = 4
DEADLINE_S = 300  # generous: the machine may be shared and loaded


def write_data(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, n, seed in [("train", 16 * STEPS_PER_EPOCH, 1), ("validation", 40, 2), ("test", 40, 3)]:
        files[name] = folder / f"{name}.csv"
        sentiment_rows(n, seed).to_csv(files[name], index=False)
    return files


def run_overrides(tiny_bert: Path, files: dict[str, Path], **extra: str) -> list[str]:
    """A tiny text run: every optimizer step writes a checkpoint, so a kill can land mid-write."""
    settings = {"model": str(tiny_bert), "data.train": str(files["train"]), "data.validation": str(files["validation"]),
                "data.test": str(files["test"]), "optimizer.lr": "3e-3", "strategy": "full",
                "scheduler.warmup_ratio": "0", "batch_size": "16", "epochs": str(EPOCHS), "precision": "fp32",
                "early_stopping.patience": "null", "checkpoint.every_steps": "1", **extra}
    return [f"{key}={value}" for key, value in settings.items()]


def _default_signals() -> None:
    """In the child, before exec: SIGINT and SIGTERM at their defaults, whatever pytest inherited
    (a background job of a non-interactive shell starts with SIGINT ignored)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    """`python -m lobell.cli ARGS` with default signal dispositions; stdout and stderr go to `log`."""
    handle = log.open("ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "lobell.cli", *args], stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=_default_signals)
    finally:
        handle.close()


def run_cli(args: list[str], log: Path, timeout: float = DEADLINE_S) -> int:
    proc = spawn(args, log)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def checkpoint_steps(run: Path) -> list[int]:
    """Global steps of the complete checkpoints (a folder whose state.json is in place)."""
    root = run / "checkpoints"
    if not root.is_dir():
        return []
    steps = []
    for name in os.listdir(root):
        match = re.fullmatch(r"step-(\d+)", name)
        if match and (root / name / "state.json").is_file():
            steps.append(int(match.group(1)))
    return sorted(steps)


def writing_checkpoint(run: Path) -> bool:
    """A checkpoint is being written: its hidden temporary folder exists."""
    try:
        return any(name.startswith(".step-") and name.endswith(".tmp") for name in os.listdir(run / "checkpoints"))
    except FileNotFoundError:
        return False


def wait_until(condition, proc: subprocess.Popen, timeout: float = DEADLINE_S, poll_s: float = 0.005) -> bool:
    """True once `condition()` holds; False if `proc` ended first. A missed deadline fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll_s)
    raise AssertionError(f"no event within {timeout} s (pid {proc.pid} still running)")


def freeze_mid_write(proc: subprocess.Popen, run: Path, tries: int = 100) -> bool:
    """Stop `proc` (SIGSTOP) while a checkpoint's temporary folder exists: a kill then cuts that write.
    A write that finished before the stop took hold is let go (SIGCONT) and the next one is tried."""
    for _ in range(tries):
        if not wait_until(lambda: writing_checkpoint(run), proc, poll_s=0.0005):
            return False
        proc.send_signal(signal.SIGSTOP)
        wait_until(lambda: _stopped(proc.pid), proc, timeout=60, poll_s=0.001)
        if writing_checkpoint(run):
            return True
        proc.send_signal(signal.SIGCONT)
    return False


def _stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return True  # no /proc (not Linux): trust the signal


def random_pause(rng: random.Random, most_s: float = 0.03) -> None:
    """A seeded random offset after an observed event: the kill lands anywhere in the next few steps."""
    time.sleep(rng.uniform(0, most_s))


def comparable(run: Path) -> tuple[dict, list[dict]]:
    """metrics.json without its timing, and metrics.jsonl without each epoch's seconds."""
    final = json.loads((run / "metrics.json").read_text())
    final.pop("timing")
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for record in epochs:
        record.pop("seconds", None)
    return final, epochs


def model_tensors(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "model" / "model.safetensors")


def assert_same_run(run: Path, reference: Path) -> None:
    assert comparable(run) == comparable(reference)
    mine, theirs = model_tensors(run), model_tensors(reference)
    assert mine.keys() == theirs.keys()
    assert all((mine[k] == theirs[k]).all() for k in mine), "the final weights differ from the uninterrupted run"
    assert not (run / ".lock").exists(), "a finished run leaves no lock behind"
