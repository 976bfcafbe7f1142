"""Resumable state: checkpoints written atomically, read without unpickling arbitrary objects.

A checkpoint folder holds the model (safetensors), optimizer and scheduler states and every
process's RNG states (tensors, loaded with `torch.load(weights_only=True)`), and `state.json`:
the position in the data, the freeze-plan stage, early stopping, the logs so far.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lobell.errors import LobellError
from lobell.run_dir import atomic_write_dir

CHECKPOINTS = "checkpoints"
BEST = "best.safetensors"


@dataclass
class TrainState:
    """Where a run is: everything besides tensors that a resumed run needs."""

    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # optimizer steps done in epoch `epoch + 1`
    global_step: int = 0
    stage: int = 0  # index into the freeze plan
    before: dict | None = None  # validation metrics before fine-tuning
    early_stopping: dict = field(default_factory=dict)
    stages_log: list = field(default_factory=list)
    lr_log: list = field(default_factory=list)
    timing: dict = field(default_factory=lambda: {"seconds": 0.0, "data_seconds": 0.0, "samples": 0, "tokens": 0})
    finished: bool = False


def save_checkpoint(run_dir: Path, state: TrainState, model_state: dict, optimizer, scheduler,
                    rng_states: list[dict], keep: int) -> Path:
    """Write checkpoint `step-<global_step>` atomically and keep only the newest `keep`."""
    folder = run_dir / CHECKPOINTS / f"step-{state.global_step:09d}"

    def fill(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in model_state.items()}, tmp / "model.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_states, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(asdict(state)))

    atomic_write_dir(folder, fill)
    for old in _complete(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def save_best(run_dir: Path, model_state: dict) -> None:
    def fill(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in model_state.items()}, tmp / BEST)

    atomic_write_dir(run_dir / CHECKPOINTS / "best", fill)


def load_best(run_dir: Path) -> dict | None:
    path = run_dir / CHECKPOINTS / "best" / BEST
    return load_file(path) if path.is_file() else None


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = _complete(run_dir)
    return found[-1] if found else None


def load_checkpoint(folder: Path) -> tuple[TrainState, dict, dict, dict, list]:
    """(state, model weights, optimizer state, scheduler state, RNG states) of a checkpoint."""
    state = TrainState(**json.loads((folder / "state.json").read_text()))
    model_state = load_file(folder / "model.safetensors")
    optimizer = torch.load(folder / "optimizer.pt", weights_only=True)
    scheduler = torch.load(folder / "scheduler.pt", weights_only=True)
    rng = torch.load(folder / "rng.pt", weights_only=True)
    return state, model_state, optimizer, scheduler, rng


def _complete(run_dir: Path) -> list[Path]:
    """Finished checkpoint folders, oldest first (a write cut short leaves only a hidden .tmp)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / "state.json").is_file())


def rng_state() -> dict:
    """This process's RNG states as tensors and plain lists (safe for weights_only loading)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(mt), gauss], "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                                              has_gauss, cached], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunLock:
    """One run per folder: a lock file naming the owner; a dead owner's lock is taken over."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and _alive(owner):
                    raise LobellError(f"run folder '{self.path.parent}' is in use by another lobell process "
                                      f"(pid {owner['pid']} on {owner['host']}); wait for it or choose another "
                                      f"output_dir") from None
                self.path.unlink(missing_ok=True)  # the owner died: its lock is stale
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump({"pid": os.getpid(), "host": socket.gethostname()}, handle)
            self.held = True
            return
        raise LobellError(f"could not lock run folder '{self.path.parent}'")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None


def _alive(owner: dict) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # another machine's process: assume it is running
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
