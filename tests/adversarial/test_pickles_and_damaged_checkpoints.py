"""Files that fight back: pickles with a code payload are never executed, and a damaged newest checkpoint
falls back to the previous good one (or one clear error when none reads back)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from adversarial import comparable
from test_bad_input import quick_run, small_files, user_error  # noqa: F401

from lobell.cli import main
from lobell.training import checkpoint as ckpt


class Payload:
    """Unpickling this runs `touch MARKER`: what a hostile pytorch_model.bin or .pth would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def write_payload(path: Path, marker: Path) -> Path:
    torch.save({"weight": torch.zeros(2), "hidden": Payload(marker)}, path)
    return path


def test_the_payload_would_run_if_unpickled(tmp_path):
    """The test's premise: loading it the unsafe way does create the marker."""
    marker = tmp_path / "marker"
    torch.load(write_payload(tmp_path / "p.bin", marker), weights_only=False)
    assert marker.exists()


@pytest.fixture(scope="module")
def finished(tiny_bert, tmp_path_factory):
    """A finished 2-epoch run (checkpoints at both epoch ends) and the files it trained on."""
    folder = tmp_path_factory.mktemp("finished")
    from conftest import sentiment_rows

    files = {}
    for name, n, seed in [("train", 40, 1), ("validation", 10, 2)]:
        files[name] = folder / f"{name}.csv"
        sentiment_rows(n, seed).to_csv(files[name], index=False)
    run = folder / "run"
    assert main(quick_run(tiny_bert, files, run, "epochs=2", "early_stopping.patience=null")) == 0
    return run, files


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _pickled_model_folder(source: Path, target: Path, marker: Path) -> Path:
    """A model folder whose only weights are a pickle with a payload (no safetensors)."""
    shutil.copytree(source, target)
    (target / "model.safetensors").unlink()
    write_payload(target / "pytorch_model.bin", marker)
    return target


def test_model_folder_with_a_pickle_payload_is_refused(tiny_bert, small_files, tmp_path, capsys):
    marker = tmp_path / "marker"
    model = _pickled_model_folder(tiny_bert, tmp_path / "bert", marker)
    message = user_error(capsys, *quick_run(model, small_files, tmp_path / "run"))
    assert "pytorch_model.bin" in message or str(model) in message, message
    assert not marker.exists()


def test_model_weights_pth_with_a_payload_is_refused(tmp_path, capsys):
    from vision_fixtures import make_class_folders

    marker = tmp_path / "marker"
    weights = write_payload(tmp_path / "resnet18.pth", marker)
    folders = make_class_folders(tmp_path / "images", per_class=4)
    message = user_error(capsys, "train", "--quiet", "task=image-classification", "model=torchvision/resnet18",
                         f"model_weights={weights}", f"data.train={folders}", "epochs=1",
                         f"output_dir={tmp_path / 'run'}")
    assert "resnet18.pth" in message
    assert not marker.exists()


def test_distillation_teacher_and_predict_never_unpickle_a_payload(finished, tiny_bert, tmp_path, capsys):
    run, files = finished
    marker = tmp_path / "marker"
    teacher = _copy(run, tmp_path)
    (teacher / "model" / "model.safetensors").unlink()
    write_payload(teacher / "model" / "pytorch_model.bin", marker)
    user_error(capsys, *quick_run(tiny_bert, files, tmp_path / "student", f"distill.teacher={teacher}"))
    user_error(capsys, "predict", str(teacher), str(files["validation"]))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated safetensors", "junk state.json", "state.json not an object",
                                    "optimizer pickle payload", "rng pickle payload"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_good_one(damage, finished, tmp_path, capsys):
    run = _copy(finished[0], tmp_path)
    marker = tmp_path / "marker"
    older, newest = ckpt._complete(run)
    if damage == "truncated safetensors":
        data = (newest / "model.safetensors").read_bytes()
        (newest / "model.safetensors").write_bytes(data[: len(data) // 3])
    elif damage == "junk state.json":
        (newest / "state.json").write_text('{"epoch": 2, "step_in')
    elif damage == "state.json not an object":
        (newest / "state.json").write_text("[1, 2]")
    else:
        write_payload(newest / ("optimizer.pt" if damage.startswith("optimizer") else "rng.pt"), marker)
    capsys.readouterr()
    assert main(["train", "--quiet", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {newest.name} (" in err and f"is damaged and was skipped; resuming from {older.name}" in err
    assert comparable(run) == comparable(finished[0])  # the repeated epoch ends the same way
    assert not marker.exists()
    assert not (run / ".lock").exists()


def test_no_readable_checkpoint_is_one_clear_error(finished, tmp_path, capsys):
    run = _copy(finished[0], tmp_path)
    for folder in ckpt._complete(run):
        (folder / "state.json").write_text("not json")
    message = user_error(capsys, "train", "--resume", str(run))
    assert f"run folder '{run}': no checkpoint can be read back: step-" in message
    assert "start it again in a new output_dir" in message
    assert not (run / ".lock").exists()


def test_damaged_best_weights_are_one_clear_error(finished, tmp_path, capsys):
    run = _copy(finished[0], tmp_path)
    (run / "checkpoints" / "best" / ckpt.BEST).write_bytes(b"\x00" * 10)
    message = user_error(capsys, "train", "--resume", str(run))
    assert "(the best weights so far) cannot be read back" in message
    assert json.loads((run / "metrics.json").read_text())  # the finished run's files are untouched
