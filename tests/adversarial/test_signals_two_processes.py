"""Two CPU processes (gloo): a stop signal, to the launcher or to one worker alone, stops every rank at
the same step with one consistent checkpoint, and the resumed run ends like the uninterrupted one."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest
from adversarial import assert_same_run, checkpoint_steps, run_cli, run_overrides, spawn, wait_until, write_data

from lobell.training import checkpoint as ckpt

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the workers")


def _workers(launcher_pid: int) -> list[int]:
    """The training processes under `lobell train --processes N` (children of the accelerate launcher)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            parents[int(entry)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)

    def descends(pid: int) -> bool:
        while pid in parents and pid != launcher_pid:
            pid = parents[pid][0]
        return pid == launcher_pid

    return sorted(pid for pid, (_, cmdline) in parents.items() if pid != launcher_pid and descends(pid)
                  and "lobell.cli" in cmdline and "accelerate" not in cmdline)


def test_sigterm_to_the_launcher_or_one_worker_stops_every_rank_at_one_step(tiny_bert, tmp_path):
    overrides = run_overrides(tiny_bert, write_data(tmp_path / "data"), epochs="3", batch_size="8")
    two = ["train", "--processes", "2"]
    reference, run, log = tmp_path / "reference", tmp_path / "stopped", tmp_path / "log.txt"
    assert run_cli([*two, "--quiet", *overrides, f"output_dir={reference}"], log) == 0, log.read_text()[-3000:]

    # 1. SIGTERM to the launching `lobell` process (what a scheduler does): forwarded once to every rank.
    log.write_text("")
    proc = spawn([*two, *overrides, f"output_dir={run}"], log)
    assert wait_until(lambda: (checkpoint_steps(run) or [0])[-1] >= 3, proc), log.read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=180) == 143, log.read_text()[-3000:]
    _assert_one_stop(log.read_text(), "SIGTERM", run)

    # 2. SIGINT to one worker alone: the other learns it at the next step (all-reduced) and stops there too.
    log.write_text("")
    proc = spawn([*two, "--resume", str(run)], log)
    done = checkpoint_steps(run)[-1]
    assert wait_until(lambda: (checkpoint_steps(run) or [0])[-1] >= done + 2, proc), log.read_text()[-3000:]
    workers = _workers(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGINT)
    assert proc.wait(timeout=180) != 0
    _assert_one_stop(log.read_text(), "SIGINT", run)

    log.write_text("")
    assert run_cli([*two, "--resume", str(run)], log) == 0, log.read_text()[-3000:]
    assert_same_run(run, reference)


def _assert_one_stop(text: str, name: str, run: Path) -> None:
    stops = re.findall(rf"error: interrupted by {name} at ([^,]+, step \d+|the end of epoch \d+)", text)
    assert len(stops) == 2 and len(set(stops)) == 1, text[-4000:]  # both ranks, at the same step
    assert f"resume with: lobell train --resume {run} --processes 2" in text
    newest = ckpt.newest_readable(run)
    assert not newest.notes and len(newest.loaded[4]) == 2  # both ranks' RNG states: written together
    assert not (run / ".lock").exists()
