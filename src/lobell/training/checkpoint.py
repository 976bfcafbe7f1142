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
from lobell.run_dir import atomic_write_dir, disk_errors

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
    epoch_loss: list = field(default_factory=lambda: [0.0, 0])  # the current epoch's [loss sum, samples]
    budget: dict = field(default_factory=dict)  # time_budget: time spent, plan, measured costs (training/budget.py)


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
    _remove_leftovers(run_dir)
    return folder


def _remove_leftovers(run_dir: Path) -> None:
    """What a kill mid-write or mid-delete left: hidden temporary folders, and step folders without
    state.json, which no resume can use and no later clean-up would see (one writer: the lock holder)."""
    root = run_dir / CHECKPOINTS
    for path in list(root.glob(".step-*")) + [p for p in root.glob("step-*") if not (p / "state.json").is_file()]:
        shutil.rmtree(path, ignore_errors=True)


def save_best(run_dir: Path, model_state: dict) -> None:
    def fill(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in model_state.items()}, tmp / BEST)

    atomic_write_dir(run_dir / CHECKPOINTS / "best", fill)


def load_best(run_dir: Path) -> dict | None:
    path = run_dir / CHECKPOINTS / "best" / BEST
    if not path.is_file():
        return None
    try:
        return load_file(path)
    except Exception as exc:  # noqa: BLE001 - a damaged file, whatever the safetensors error
        raise LobellError(f"'{path}' (the best weights so far) cannot be read back ({' '.join(str(exc).split())}); "
                          f"the run cannot be resumed: start it again in a new output_dir") from None


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = _complete(run_dir)
    return found[-1] if found else None


@dataclass
class Resumable:
    """The checkpoint a resumed run starts from, what `load_checkpoint` read, and the damaged ones skipped."""

    folder: Path
    loaded: tuple
    notes: list[str]


def newest_readable(run_dir: Path) -> Resumable:
    """The newest checkpoint that reads back whole; damaged newer ones are skipped, and the notes say so.

    A checkpoint is written atomically, so damage means something outside lobell (a disk fault, a
    copy cut short, a hand edit). The folder before it is a complete, older state of the same run:
    resuming from it repeats a few steps and ends the same way.

    Raises:
        LobellError: when no checkpoint reads back, naming each and why.
    """
    notes, failures = [], []
    for folder in reversed(_complete(run_dir)):
        try:
            loaded = load_checkpoint(folder)
        except Exception as exc:  # noqa: BLE001 - truncated, junk or unpicklable: all mean "damaged"
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            failures.append(f"{folder.name} ({reason})")
            continue
        notes += [f"checkpoint {failure} is damaged and was skipped; resuming from {folder.name}, the newest "
                  f"one that reads back" for failure in failures]
        return Resumable(folder, loaded, notes)
    raise LobellError(f"run folder '{run_dir}': no checkpoint can be read back: {'; '.join(failures)}; the run "
                      f"cannot be resumed: start it again in a new output_dir")


def load_checkpoint(folder: Path) -> tuple[TrainState, dict, dict, dict, list]:
    """(state, model weights, optimizer state, scheduler state, RNG states) of a checkpoint.

    Nothing here unpickles arbitrary objects: tensors come from safetensors or
    `torch.load(weights_only=True)`, which refuses a pickle that would run code."""
    fields = json.loads((folder / "state.json").read_text())
    if not isinstance(fields, dict):
        raise ValueError("state.json does not hold an object")
    state = TrainState(**fields)
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
    """One run per folder: `.lock` names its owner (pid, host) and is held with `flock` while the run lives.

    The kernel drops an flock when its process dies, however it dies (SIGKILL included), so a lock
    on this host that nobody holds is stale and is taken over, even where the pid was reused. A lock
    file naming a live process without flock (another program, an older lobell) is refused, and so
    is another machine's.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.held = False
        self._fd: int | None = None

    def acquire(self) -> None:
        with disk_errors(self.path):  # a full disk: one sentence, not a traceback
            self._acquire()

    def _acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            fd, locked = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), False
            try:
                if not _try_flock(fd):
                    raise self._in_use()
                if not _same_file(fd, self.path):  # its owner released (unlinked) it meanwhile: open it anew
                    os.close(fd)
                    continue
                if self._foreign(self._owner()):
                    raise self._in_use()
                locked = True
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "flock": True}).encode(),
                          0)
            except BaseException:
                if locked:  # ours, but not written (a full disk): leave nothing behind
                    self.path.unlink(missing_ok=True)
                os.close(fd)
                raise
            self._fd, self.held = fd, True
            return
        raise LobellError(f"could not lock run folder '{self.path.parent}': other processes keep taking it")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            self.path.unlink(missing_ok=True)  # unlinked while still held: no other run can slip in between
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @staticmethod
    def _foreign(owner: dict | None) -> bool:
        """A lock nobody flock-holds that still counts: another machine's (its flock may not reach here),
        or one written without flock (another program, an older lobell) by a process that lives."""
        if owner is None or owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            return False
        if owner.get("host") != socket.gethostname():
            return True
        return not owner.get("flock") and _alive(owner)

    def _in_use(self) -> LobellError:
        owner = self._owner() or {}
        who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
        return LobellError(f"run folder '{self.path.parent}' is in use by another lobell process ({who}); wait "
                           f"for it or choose another output_dir (if that process is gone, delete "
                           f"'{self.path}')")

    def _owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None


def _try_flock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the pid check alone decides
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _alive(owner: dict) -> bool:
    try:
        os.kill(int(owner["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError, TypeError):
        return False
    except PermissionError:
        return True
    return True
