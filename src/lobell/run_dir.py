"""The run folder: every file written atomically (temp file, then rename), so nothing is half-written.

A full disk or quota (ENOSPC, EDQUOT) while writing is a user error naming the path; the file or
folder that was there before stays as it was, and no temporary file is left behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lobell.errors import LobellError

# Errors that mean "the disk is full", not "lobell has a bug".
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_UMASK = os.umask(0o022)  # read once (it can only be read by setting it), then put back
os.umask(_UMASK)
# How safetensors (a Rust io::Error) and torch.save (its zip writer: "file write failed", or
# "unexpected pos" after a short write) word the same failure.
_FULL_MARKERS = ("no space left on device", "os error 28", "disk quota exceeded", "file write failed",
                 "unexpected pos")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a part."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Like `atomic_write_text`, for bytes (images, binary files)."""
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide run files from the group
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def add_json_section(path: Path, key: str, value) -> None:
    """Set `key` in the JSON object at `path` (recipe.json's lr_probe, budget, precision); no file, no change."""
    path = Path(path)
    if path.is_file():
        atomic_write_json(path, {**json.loads(path.read_text()), key: value})


def atomic_write_dir(path: Path, fill: Callable[[Path], None]) -> None:
    """Fill a fresh temporary folder, then swap it in for `path`; a failure leaves `path` as it was."""
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        old = path.parent / f".{path.name}.old"
        try:
            os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp's 0700, likewise
            fill(tmp)
            _fsync_tree(tmp)  # a crash after the rename must not leave a folder of empty files
            if old.exists():
                shutil.rmtree(old)
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old.exists() and not path.exists():
                os.replace(old, path)
            raise
    shutil.rmtree(old, ignore_errors=True)


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line; a failed write is cut back off, so the file never ends in half a line."""
    line = (json.dumps(record, default=_jsonable) + "\n").encode("utf-8")
    path = Path(path)
    with disk_errors(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(line):
                    written += os.write(fd, line[written:])
            except BaseException:
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)


@contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """Turn a full disk or quota while writing `path` into one sentence naming it."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no space left on device"
        raise LobellError(f"the disk is full: writing '{path}' failed ({reason}); files written before are intact: "
                          f"free some space (or set output_dir to another disk) and run again") from exc


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, also as the writers that wrap them report it (safetensors, torch.save)."""
    if isinstance(exc, LobellError):
        return False  # already explained (an inner writer's own message)
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return True
    text = str(exc).lower()
    return not isinstance(exc, OSError) and any(marker in text for marker in _FULL_MARKERS)


def _fsync_tree(folder: Path) -> None:
    for file in (p for p in folder.rglob("*") if p.is_file()):
        with file.open("rb+") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX; elsewhere a folder cannot be opened and synced)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check_run_dir(run_dir: Path, needs: tuple[str, ...] = ("model", "config.yaml")) -> Path:
    """A finished run folder, or one sentence on what is missing."""
    if not run_dir.exists():
        raise LobellError(f"run folder '{run_dir}' does not exist")
    if not run_dir.is_dir():
        raise LobellError(f"run folder '{run_dir}' is a file, not a folder; give the folder `lobell train` wrote "
                          f"(its output_dir)")
    for item in needs:
        if not (run_dir / item).exists():
            raise LobellError(f"run folder '{run_dir}' has no {item}: the run did not finish; train again or "
                              f"resume it")
    return run_dir
