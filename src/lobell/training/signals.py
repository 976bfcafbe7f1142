"""Stop requests: SIGTERM, SIGINT (and, opted in, SIGUSR1) become a checkpoint at the next optimizer step.

Schedulers (SLURM, Kubernetes, `timeout`, spot machines) send SIGTERM and kill a few seconds later;
a terminal sends SIGINT. Both are handled the same way: the handler only records the request; the
training loop looks at it after each optimizer step (`StopSignals.poll`), where the model, optimizer
and data position agree, writes a checkpoint there and leaves with `Interrupted` (exit code 128 +
the signal: 143 for SIGTERM, 130 for SIGINT). Outside the training loop (loading data and the
model, the final evaluation and the model folder) there is nothing new to save: the signal stops
the run at once, and the newest checkpoint is where a resume continues.

With several processes every rank polls the same all-reduced request, so all of them write the
same checkpoint at the same step even when the signal reached only some of them.

SIGINT stays ignored in one case: it was inherited as ignored and stdin is not a terminal. That is
how a non-interactive shell starts a background job (`cmd &` in a script, many CI runners), asking
for it to be immune to the keyboard; SIGTERM still stops such a job cleanly. Anywhere else (a
terminal, or SIGINT at its default) lobell installs its handler explicitly.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

from lobell.errors import LobellError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
CHECKPOINT_SIGNAL = getattr(signal, "SIGUSR1", None)  # absent on Windows


class Interrupted(LobellError):
    """A stop signal: a checkpoint was written (or none was needed); the message says how to resume."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def keeps_sigint_ignored(previous, stdin=None) -> bool:
    """True where an inherited 'ignore SIGINT' is the parent's wish: a background job without a terminal."""
    stdin = sys.stdin if stdin is None else stdin
    try:
        interactive = stdin is not None and os.isatty(stdin.fileno())
    except (AttributeError, OSError, ValueError):  # no real file behind stdin (pytest, notebooks)
        interactive = False
    return previous is signal.SIG_IGN and not interactive


class StopSignals:
    """Installs the handlers for one run (`with StopSignals(...) as stops:`) and restores the previous ones.

    Only the main thread may install signal handlers; elsewhere (a run started from a worker thread)
    this does nothing and the process keeps its own handlers.
    """

    def __init__(self, checkpoint_on_usr1: bool = False):
        self.checkpoint_on_usr1 = checkpoint_on_usr1 and CHECKPOINT_SIGNAL is not None
        self.requested: int | None = None  # the first stop signal received
        self.checkpoint_requested = False  # SIGUSR1: checkpoint and go on
        self.deferred = False  # inside the training loop: act at the next step, not at once
        self.resume_command: str | None = None  # known once training starts
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        _ACTIVE.append(self)
        if threading.current_thread() is not threading.main_thread():
            return self
        wanted = list(STOP_SIGNALS) + ([CHECKPOINT_SIGNAL] if self.checkpoint_on_usr1 else [])
        for signum in wanted:
            previous = signal.getsignal(signum)
            if signum == signal.SIGINT and keeps_sigint_ignored(previous):
                continue
            self._previous[signum] = previous
            signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        if self in _ACTIVE:
            _ACTIVE.remove(self)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if CHECKPOINT_SIGNAL is not None and signum == CHECKPOINT_SIGNAL:
            self.checkpoint_requested = True
            return
        if self.requested is not None:  # a second signal: the checkpoint being written is finished first
            print(f"lobell: {signal_name(signum)} again: still writing the checkpoint, then stopping",
                  file=sys.stderr, flush=True)
            return
        self.requested = signum
        if not self.deferred:  # setup or the final phase: nothing new to save, stop now
            raise self._at_once(signum)
        print(f"lobell: {signal_name(signum)} received: writing a checkpoint at the next step, then stopping",
              file=sys.stderr, flush=True)

    def _at_once(self, signum: int) -> Interrupted:
        if self.resume_command is None:
            return Interrupted(f"interrupted by {signal_name(signum)} before training started", signum)
        return Interrupted(f"interrupted by {signal_name(signum)} after training, before the model folder was "
                           f"written; the last epoch's checkpoint holds the run; resume with: {self.resume_command}",
                           signum)

    def poll(self, accelerator) -> tuple[int | None, bool]:
        """(stop signal or None, checkpoint now?) agreed by every process; call it at a step boundary."""
        stop, checkpoint = self.requested or 0, int(self.checkpoint_requested)
        if accelerator is not None and accelerator.num_processes > 1:
            import torch
            import torch.distributed as dist

            flags = torch.tensor([stop, checkpoint], device=accelerator.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            stop, checkpoint = (int(v) for v in flags.tolist())
        self.checkpoint_requested = False
        if stop and self.requested is None:  # another rank's signal: remember it here too
            self.requested = stop
        return (stop or None), bool(checkpoint)


_ACTIVE: list[StopSignals] = []  # the runs in progress in this process, innermost last


def enter_loop(resume_command: str) -> None:
    """From here until `leave_loop` a stop signal waits for the next optimizer step boundary."""
    if _ACTIVE:
        _ACTIVE[-1].deferred, _ACTIVE[-1].resume_command = True, resume_command


def leave_loop(accelerator) -> None:
    """The training loop is over: a request that found no step boundary (it came during the last
    evaluation of a run with nothing left to train) stops here, on every process together."""
    if not _ACTIVE:
        return
    stops = _ACTIVE[-1]
    stop, _ = stops.poll(accelerator)
    stops.deferred = False
    if stop:
        raise stops._at_once(stop)


def step_boundary(accelerator, save, where: str, resume_command: str, saved: bool = False) -> None:
    """At an optimizer step boundary: act on a pending request, agreed across processes.

    Args:
        accelerator: the run's Accelerator (its processes agree on the request).
        save: writes a checkpoint of the current step (called on every process).
        where: e.g. "epoch 2, step 7", for the message.
        resume_command: the command that continues the run.
        saved: a checkpoint of this very step was just written; no second one is needed.

    Raises:
        Interrupted: after the checkpoint, for a stop signal.
    """
    if not _ACTIVE:
        return
    stop, checkpoint_now = _ACTIVE[-1].poll(accelerator)
    if (stop or checkpoint_now) and not saved:
        save()
    if stop:
        raise Interrupted(f"interrupted by {signal_name(stop)} at {where}, where a checkpoint was written; "
                          f"resume with: {resume_command}", stop)
    if checkpoint_now and accelerator.is_main_process:
        print(f"lobell: {signal_name(CHECKPOINT_SIGNAL)}: checkpoint written at {where}; training goes on",
              file=sys.stderr, flush=True)
