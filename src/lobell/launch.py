"""`--processes N`: hand the same command to Accelerate's own launcher, never a home-made one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import torch

from lobell.errors import LobellError

# How long torchrun waits for its workers to write their checkpoint after it forwards SIGTERM/SIGINT,
# before it kills them (its default is 30 s; a large model's checkpoint can take longer).
SHUTDOWN_TIMEOUT_S = "300"


def launch_command(processes: int, lobell_args: list[str]) -> list[str]:
    """`accelerate launch` for N processes on this machine: DDP over GPUs, or gloo on the CPU.

    Accelerate's `--multi_gpu` mode starts N processes through torchrun; with no GPU, lobell's
    Accelerator(cpu=True) then joins them with the gloo backend (Accelerate's MULTI_CPU).
    """
    if torch.cuda.is_available() and torch.cuda.device_count() < processes:
        raise LobellError(f"--processes {processes} but only {torch.cuda.device_count()} GPU(s) are visible")
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "lobell.cli", *lobell_args]


def launch(processes: int, lobell_args: list[str], env: dict[str, str] | None = None) -> int:
    """Run the launcher and wait (`env` adds variables to the workers'); SIGTERM/SIGINT sent to this
    process are passed on exactly once.

    The launcher runs in its own process group, so a terminal's Ctrl-C reaches this process alone
    and is forwarded to the launcher, which forwards it to every worker (torchrun does); each worker
    then checkpoints at the same step (training/signals.py). SIGUSR1 is ignored here and in the launcher
    (it would end them); the workers handle it where `checkpoint.on_sigusr1` is on: send it to them.
    """
    from lobell.training.signals import keeps_sigint_ignored

    env = {**os.environ, **(env or {}), "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT",
                                                                           SHUTDOWN_TIMEOUT_S)}
    usr1 = getattr(signal, "SIGUSR1", None)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, usr1) if s is not None}
    handled = [s for s in (signal.SIGTERM, signal.SIGINT)
               if not (s == signal.SIGINT and keeps_sigint_ignored(previous[s]))]
    received: list[int] = []
    child: list[subprocess.Popen] = []

    def forward(signum, frame) -> None:
        if not received and child:
            child[0].send_signal(signum)
        received.append(signum)

    try:
        for signum in handled:
            signal.signal(signum, forward)
        if usr1 is not None:
            signal.signal(usr1, signal.SIG_IGN)  # inherited by the launcher and the workers, see above
        child.append(subprocess.Popen(launch_command(processes, lobell_args), env=env,
                                      **({"process_group": 0} if os.name == "posix" else {})))
        if received:  # a signal came while the launcher was starting
            child[0].send_signal(received[0])
        code = child[0].wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    if received and code not in (0, 2):
        return 128 + int(received[0])  # what the workers exit with (143, 130): the launcher's own code is 1
    return code
