"""A full disk: one `error:` line, the previous good model and files untouched, no temporary left; once
space is freed the same run resumes and finishes."""

from __future__ import annotations

import errno
import importlib
import shutil
import subprocess
from pathlib import Path

import pytest
from test_bad_input import quick_run, small_files, user_error  # noqa: F401

from lobell.cli import main


@pytest.fixture()
def small_disk(tmp_path):
    """A 16 MB tmpfs (root only); skipped where mounting is not allowed (the simulated test below runs)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs",
                                                        str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); test_full_disk_simulated covers the same rule")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Write until the disk refuses another byte."""
    filler = disk / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_full_tmpfs_keeps_the_previous_good_model(small_disk, tiny_bert, small_files, capsys):
    run = small_disk / "run"
    assert main(quick_run(tiny_bert, small_files, run)) == 0
    before = _snapshot(run)
    filler = _fill(small_disk)
    message = user_error(capsys, "train", "--quiet", "--resume", str(run))
    assert message.startswith("error: the disk is full: writing '") and "files written before are intact" in message
    assert _snapshot(run) == before, "a failed write changed or left files in the run folder"
    assert not (run / ".lock").exists()
    message = user_error(capsys, *quick_run(tiny_bert, small_files, small_disk / "second"))  # a new run, no room
    assert "the disk is full" in message
    assert _snapshot(run) == before
    filler.unlink()
    assert main(["train", "--quiet", "--resume", str(run)]) == 0
    after = _snapshot(run)
    assert after["model/model.safetensors"] == before["model/model.safetensors"]


def test_full_disk_simulated_while_writing_the_model(tiny_bert, small_files, tmp_path, capsys, monkeypatch):
    """The same rule where no tmpfs can be mounted: ENOSPC from the model writer (safetensors)."""
    from lobell import run_dir

    run = tmp_path / "run"
    assert main(quick_run(tiny_bert, small_files, run)) == 0
    before = _snapshot(run)
    real = run_dir.atomic_write_dir

    def full(path, fill):
        def failing(tmp):
            fill(tmp)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, failing if Path(path).name == "model" else fill)

    monkeypatch.setattr(importlib.import_module("lobell.training.runner"), "atomic_write_dir", full)
    message = user_error(capsys, "train", "--quiet", "--resume", str(run))
    assert message.startswith(f"error: the disk is full: writing '{run / 'model'}'")
    after = _snapshot(run)
    assert after["model/model.safetensors"] == before["model/model.safetensors"]
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert not (run / ".lock").exists()
