"""`--processes N`: hand the same command to Accelerate's own launcher, never a home-made one."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from lobell.errors import LobellError


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
    """Run the launched processes to the end; `env` adds variables to theirs."""
    return subprocess.call(launch_command(processes, lobell_args), env={**os.environ, **(env or {})})
