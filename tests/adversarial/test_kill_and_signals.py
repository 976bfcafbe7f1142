"""SIGKILL, SIGTERM and SIGINT at random moments: every resumed run ends exactly like the uninterrupted one.

The moments are observable events (the k-th checkpoint complete, a checkpoint's temporary folder
appearing) plus seeded random offsets, so the test neither races a fixed sleep nor depends on the
machine's speed. One uninterrupted reference run serves all the tests of this file.
"""

from __future__ import annotations

import random
import signal
import sys

import pytest
from adversarial import (DEADLINE_S, EPOCHS, STEPS_PER_EPOCH, assert_same_run, checkpoint_steps, freeze_mid_write,
                         random_pause, run_cli, run_overrides, spawn, wait_until, write_data, writing_checkpoint)

from lobell.cli import main
from lobell.training import checkpoint as ckpt

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH


@pytest.fixture(scope="module")
def setup(tiny_bert, tmp_path_factory):
    """(overrides without output_dir, the uninterrupted reference run folder)."""
    folder = tmp_path_factory.mktemp("adversarial")
    overrides = run_overrides(tiny_bert, write_data(folder / "data"))
    reference = folder / "reference"
    assert main(["train", "--quiet", *overrides, f"output_dir={reference}"]) == 0
    return overrides, reference


def test_sigkill_at_20_random_moments_then_resume_matches_the_uninterrupted_run(setup, tmp_path):
    overrides, reference = setup
    run, log, rng = tmp_path / "killed", tmp_path / "log.txt", random.Random(20)
    targets = sorted(rng.sample(range(1, TOTAL_STEPS), 20))
    torn = 0  # kills that left a checkpoint's temporary folder behind: cut mid-write (every third aims there)
    for kill, target in enumerate(targets):
        done = checkpoint_steps(run)
        target = max(target, (done[-1] if done else 0) + 1)  # each kill lands after some progress
        args = ["train", "--resume", str(run)] if done else ["train", *overrides, f"output_dir={run}"]
        proc = spawn(args, log)
        mid_write = kill % 3 == 2  # every third kill aims at a checkpoint being written
        reached = wait_until(lambda: (checkpoint_steps(run) or [0])[-1] >= target - mid_write, proc)
        if reached and mid_write:
            freeze_mid_write(proc, run)
        elif reached:
            random_pause(rng)
        proc.kill()
        proc.wait()
        assert proc.returncode in (-signal.SIGKILL, 0), log.read_text()[-3000:]
        torn += writing_checkpoint(run)
        if proc.returncode == 0:  # finished before the kill landed: nothing left to interrupt
            break
    assert torn >= 3, f"only {torn} kill(s) landed while a checkpoint was being written"
    assert run_cli(["train", "--resume", str(run)], log) == 0, log.read_text()[-3000:]
    assert "resuming" in log.read_text()
    assert_same_run(run, reference)
    left = sorted(p.name for p in (run / "checkpoints").iterdir())  # what the kills left was cleaned up
    steps = [name for name in left if name != "best"]
    assert "best" in left and len(steps) == 2 and all(name.startswith("step-") for name in steps), left


@pytest.mark.parametrize("signals", [
    [signal.SIGTERM, signal.SIGINT, signal.SIGTERM],
    [signal.SIGINT, signal.SIGTERM, signal.SIGINT],
], ids=["term-first", "int-first"])
def test_sigterm_and_sigint_checkpoint_exit_143_or_130_and_resume_exactly(signals, setup, tmp_path):
    """The first signal of each round is followed by more while the checkpoint is written: it stays whole."""
    overrides, reference = setup
    run, log = tmp_path / "stopped", tmp_path / "log.txt"
    rng = random.Random(int(signals[0]))
    targets = sorted(rng.sample(range(2, TOTAL_STEPS - 4), len(signals)))
    for round_, (signum, target) in enumerate(zip(signals, targets)):
        done = checkpoint_steps(run)
        target = max(target, (done[-1] if done else 0) + 1)
        args = ["train", "--resume", str(run)] if done else ["train", *overrides, f"output_dir={run}"]
        log.write_text("")
        proc = spawn(args, log)
        assert wait_until(lambda: (checkpoint_steps(run) or [0])[-1] >= target, proc), log.read_text()[-3000:]
        random_pause(rng)
        proc.send_signal(signum)
        if round_ != 1:  # a second and third signal, while the stop's checkpoint is being written
            wait_until(lambda: "received: writing a checkpoint" in log.read_text(), proc)
            wait_until(lambda: writing_checkpoint(run), proc, poll_s=0.0005)
            for again in (signal.SIGTERM, signal.SIGINT):
                if proc.poll() is None:
                    proc.send_signal(again)
        code = proc.wait(timeout=120)
        text = log.read_text()
        assert code == 128 + signum, text[-3000:]
        assert f"interrupted by {signal.Signals(signum).name} at " in text, text[-3000:]
        assert f"resume with: lobell train --resume {run}" in text
        assert "Traceback" not in text, text[-3000:]
        assert not (run / ".lock").exists(), "a stopped run releases its lock"
        newest = ckpt.newest_readable(run)
        assert not newest.notes, newest.notes  # the newest checkpoint reads back whole
        assert newest.folder.name == f"step-{checkpoint_steps(run)[-1]:09d}"
    log.write_text("")
    assert run_cli(["train", "--resume", str(run)], log) == 0, log.read_text()[-3000:]
    assert_same_run(run, reference)


def test_ctrl_c_is_handled_even_where_pytest_ignores_sigint(setup, tmp_path):
    """The child restores SIGINT's default before exec, so a background pytest (SIGINT ignored) still works."""
    overrides, _ = setup
    run, log = tmp_path / "run", tmp_path / "log.txt"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # how a non-interactive shell starts `pytest &`
    try:
        proc = spawn(["train", *overrides, f"output_dir={run}"], log)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert wait_until(lambda: bool(checkpoint_steps(run)), proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    assert checkpoint_steps(run)


def test_a_background_job_without_a_terminal_keeps_sigint_ignored(setup, tmp_path):
    """The documented exception: SIGINT inherited as ignored, stdin not a terminal: ignored; SIGTERM still stops."""
    overrides, _ = setup
    run, log = tmp_path / "run", tmp_path / "log.txt"
    handle = log.open("ab")

    def background_job() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "lobell.cli", "train", *overrides, f"output_dir={run}",
                             "epochs=30"], stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=background_job)
    handle.close()
    assert wait_until(lambda: bool(checkpoint_steps(run)), proc)
    proc.send_signal(signal.SIGINT)
    seen = checkpoint_steps(run)[-1]
    assert wait_until(lambda: checkpoint_steps(run)[-1] >= seen + 3, proc), "SIGINT stopped a background job"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, log.read_text()[-3000:]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1")
def test_sigusr1_opted_in_checkpoints_and_goes_on(setup, tmp_path):
    overrides, reference = setup
    run, log = tmp_path / "run", tmp_path / "log.txt"
    plain = [o for o in overrides if not o.startswith("checkpoint.every_steps")]  # only epoch ends checkpoint
    proc = spawn(["train", *plain, "checkpoint.on_sigusr1=true", f"output_dir={run}"], log)
    assert wait_until(lambda: "before fine-tuning:" in log.read_text(), proc, poll_s=0.01)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=DEADLINE_S) == 0, log.read_text()[-3000:]
    assert "SIGUSR1: checkpoint written at epoch 1, step " in log.read_text()
    assert_same_run(run, reference)  # the extra checkpoint changes nothing
