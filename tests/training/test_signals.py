"""Stop signals in-process: which handlers are installed, restored, deferred to a step, or left ignored."""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest
from test_bad_input import quick_run, small_files  # noqa: F401

from lobell.cli import main
from lobell.training import signals
from lobell.training.signals import Interrupted, StopSignals, keeps_sigint_ignored

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def test_sigint_stays_ignored_only_for_a_background_job_without_a_terminal(tmp_path):
    with open(os.devnull) as devnull:
        assert keeps_sigint_ignored(signal.SIG_IGN, devnull)
        assert not keeps_sigint_ignored(signal.SIG_DFL, devnull)
        assert not keeps_sigint_ignored(signal.default_int_handler, devnull)
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, closefd=False) as terminal:
            assert not keeps_sigint_ignored(signal.SIG_IGN, terminal)  # a user at a terminal: Ctrl-C works
    finally:
        os.close(leader)
        os.close(follower)


def test_handlers_are_installed_for_the_run_and_restored_after():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    with StopSignals(checkpoint_on_usr1=True) as stops:
        assert all(signal.getsignal(s) == stops._handle for s in before)
    assert {s: signal.getsignal(s) for s in before} == before


def test_outside_the_loop_a_signal_stops_at_once_with_143():
    with pytest.raises(Interrupted) as stopped:
        with StopSignals():
            signal.raise_signal(signal.SIGTERM)
    assert stopped.value.exit_code == 143 and stopped.value.signum == signal.SIGTERM


def test_inside_the_loop_a_signal_waits_for_the_step_and_a_second_one_changes_nothing(capsys):
    saved = []
    with StopSignals():
        signals.enter_loop("lobell train --resume r")
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)  # while "writing the checkpoint": noted, not acted on
        with pytest.raises(Interrupted) as stopped:
            signals.step_boundary(None, lambda: saved.append(1), "epoch 1, step 3", "lobell train --resume r")
    assert saved == [1] and stopped.value.exit_code == 130
    assert "interrupted by SIGINT at epoch 1, step 3, where a checkpoint was written; resume with: lobell train " \
           "--resume r" == str(stopped.value)
    assert "SIGTERM again: still writing the checkpoint" in capsys.readouterr().err


def test_a_signal_during_the_last_evaluation_stops_when_the_loop_ends():
    with StopSignals():
        signals.enter_loop("lobell train --resume r")
        signal.raise_signal(signal.SIGTERM)  # no step boundary follows
        with pytest.raises(Interrupted) as stopped:
            signals.leave_loop(None)
        assert "after training, before the model folder was written" in str(stopped.value)
    with StopSignals():
        signals.enter_loop("lobell train --resume r")
        signals.leave_loop(None)  # nothing pending: the final phase begins
        with pytest.raises(Interrupted, match="resume with: lobell train --resume r") as stopped:
            signal.raise_signal(signal.SIGINT)  # the final phase: at once
        assert stopped.value.exit_code == 130


def test_sigusr1_checkpoints_and_goes_on(capsys):
    saved = []
    with StopSignals(checkpoint_on_usr1=True):
        signals.enter_loop("lobell train --resume r")
        signal.raise_signal(signal.SIGUSR1)

        class Main:
            num_processes, is_main_process = 1, True

        signals.step_boundary(Main(), lambda: saved.append(1), "epoch 1, step 2", "x")
        signals.step_boundary(Main(), lambda: saved.append(2), "epoch 1, step 3", "x")  # nothing pending
    assert saved == [1]
    assert "SIGUSR1: checkpoint written at epoch 1, step 2; training goes on" in capsys.readouterr().err


def test_a_run_on_another_thread_leaves_the_handlers_alone():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def run():
        with StopSignals():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [before] and signal.getsignal(signal.SIGTERM) == before


def test_train_restores_the_handlers_it_found(tiny_bert, small_files, tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    assert main(quick_run(tiny_bert, small_files, tmp_path / "run")) == 0
    assert {s: signal.getsignal(s) for s in before} == before
