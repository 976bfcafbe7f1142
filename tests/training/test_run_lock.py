"""The run lock: released on every way out, a dead owner's lock taken over, a live one refused in one sentence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from test_bad_input import quick_run, small_files, user_error  # noqa: F401

from lobell.cli import main
from lobell.errors import LobellError
from lobell.training.checkpoint import RunLock


def test_released_after_success_error_and_resume(tiny_bert, small_files, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(quick_run(tiny_bert, small_files, run)) == 0
    assert not (run / ".lock").exists()
    assert main(["train", "--quiet", "--resume", str(run)]) == 0  # the issue: sometimes left after --resume
    assert not (run / ".lock").exists()
    failed = tmp_path / "failed"  # an error after the lock was taken (the loss turns NaN at step 1)
    user_error(capsys, *quick_run(tiny_bert, small_files, failed, "loss.name=test_bad_input:nan_after_steps"))
    assert not (failed / ".lock").exists()


def test_released_when_tracking_fails_at_the_end(tiny_bert, small_files, tmp_path, monkeypatch):
    from lobell import tracking

    def broken(accelerator):
        raise RuntimeError("tracker crashed")

    monkeypatch.setattr(tracking, "finish", broken)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="tracker crashed"):
        main(quick_run(tiny_bert, small_files, run))
    assert not (run / ".lock").exists()


def test_a_dead_owners_lock_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename}))
    lock = RunLock(tmp_path)
    lock.acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_a_lock_nobody_holds_is_stale_even_if_its_pid_was_reused(tmp_path):
    """The pid now belongs to a live process (this one's parent), but no flock holds the lock: stale."""
    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename, "flock": True}))
    lock = RunLock(tmp_path)
    lock.acquire()
    lock.release()


def test_a_live_lock_from_another_program_is_refused(tmp_path):
    """A lock file naming a live process, written without flock (another program, an older lobell)."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / ".lock").write_text(json.dumps({"pid": other.pid, "host": os.uname().nodename}))
        with pytest.raises(LobellError, match=rf"is in use by another lobell process \(pid {other.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        other.kill()
        other.wait()
    RunLock(tmp_path).acquire()  # its owner gone, the lock is free


def test_a_lock_held_by_a_running_process_is_refused_in_one_sentence(tiny_bert, small_files, tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from lobell.training.checkpoint import RunLock
        RunLock(Path({str(run)!r})).acquire()
        print("held", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        message = user_error(capsys, *quick_run(tiny_bert, small_files, run))
        assert message.startswith(f"error: run folder '{run}' is in use by another lobell process (pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert main(quick_run(tiny_bert, small_files, run)) == 0  # killed: the kernel dropped its flock
    assert not (run / ".lock").exists()


def test_another_machines_lock_is_refused(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "some-other-machine"}))
    with pytest.raises(LobellError, match="some-other-machine"):
        RunLock(tmp_path).acquire()


def test_checkpoint_leftovers_of_kills_are_cleaned_up(tmp_path):
    """A kill mid-write leaves a hidden .tmp folder; a kill mid-delete a step folder without state.json."""
    import torch

    from lobell.training import checkpoint as ckpt

    root = tmp_path / ckpt.CHECKPOINTS
    (root / ".step-000000004.abc.tmp").mkdir(parents=True)
    (root / "step-000000001").mkdir()
    (root / "step-000000001" / "rng.pt").write_bytes(b"half deleted")
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for step in (5, 6, 7):
        ckpt.save_checkpoint(tmp_path, ckpt.TrainState(global_step=step), {"w": weight.detach()}, optimizer,
                             scheduler, [ckpt.rng_state()], keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["step-000000006", "step-000000007"]
