"""Bad input: every user error is exit 2 and one `error:` line naming what is wrong; nothing written is lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import sentiment_rows

from lobell import run_dir as run_files
from lobell.cli import main
from lobell.config import DataConfig
from lobell.data.splits import load_splits
from lobell.data.tables import read_table
from lobell.data.text import TokenizedText, truncation_notes
from lobell.errors import LobellError
from lobell.training import checkpoint as ckpt
from lobell.training import faults

# Training steps at which the `nan_after_steps` loss below turns to NaN (set by a test).
NAN_AT_STEP = {"step": 0, "seen": 0}


def nan_after_steps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy that becomes NaN at training step NAN_AT_STEP['step'] (evaluation passes never count)."""
    loss = torch.nn.functional.cross_entropy(logits.float(), targets)
    if logits.requires_grad:
        NAN_AT_STEP["seen"] += 1
        if NAN_AT_STEP["seen"] >= NAN_AT_STEP["step"]:
            return loss * float("nan")
    return loss


def user_error(capsys, *args: str) -> str:
    """Run the CLI in-process; assert exit 2, no traceback and exactly one `error:` line, the last; return it."""
    capsys.readouterr()
    code = main(list(args))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert "Traceback" not in err and len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    return errors[0]


@pytest.fixture()
def small_files(tmp_path) -> dict[str, Path]:
    """40 training and 10 validation reviews: a run over them takes a few steps."""
    files = {}
    for name, n, seed in [("train", 40, 1), ("validation", 10, 2)]:
        files[name] = tmp_path / f"{name}.csv"
        sentiment_rows(n, seed).to_csv(files[name], index=False)
    return files


def quick_run(tiny_bert, files: dict[str, Path], output: Path, *extra: str) -> list[str]:
    return ["train", "--quiet", f"model={tiny_bert}", f"data.train={files['train']}",
            f"data.validation={files['validation']}", "optimizer.lr=3e-3", "strategy=full", "batch_size=8",
            "epochs=1", "precision=fp32", "scheduler.warmup_ratio=0", f"output_dir={output}", *extra]


# --- Data files ---------------------------------------------------------------------------------

GOOD = "text,label\ngood film,pos\nbad film,neg\ngreat plot,pos\ndull plot,neg\n"

DATA_CASES = {
    "missing": (None, [], ["data file", "does not exist"]),
    "empty": (b"", [], ["is empty (0 bytes)"]),
    "whitespace": (b"\n \n", [], ["is empty (only whitespace)"]),
    "header only": (b"text,label\n", [], ["has a header (text, label) but no rows"]),
    "semicolons": (b"text;label\ngood;pos\nbad;neg\n", [], ["single column 'text;label'", "separated by semicolons",
                                                            "re-save it comma-separated"]),
    "tabs in a .csv": (b"text\tlabel\ngood\tpos\nbad\tneg\n", [], ["separated by tabs", "rename it to .tsv"]),
    "no text column": (b"review,label\ngood,pos\nbad,neg\n", [],
                       ["no column 'text' (data.text_column)", "its columns are: review, label"]),
    "no label column": (b"text,labels\ngood,pos\nbad,neg\n", [],
                        ["no column 'label' (data.label_column) (did you mean 'labels'?)"]),
    "empty text": (b"text,label\ngood,pos\n,neg\nbad,neg\n", [],
                   ["1 empty value(s) in column 'text', first at row 3", "fill or drop"]),
    "blank text": (b'text,label\ngood,pos\nbad,neg\n"  ",neg\n', [],
                   ["empty value(s) in column 'text', first at row 4"]),
    "missing label": (b"text,label\ngood,pos\nbad,\nok,neg\n", [],
                      ["1 missing label(s) in column 'label', first at row 3"]),
    "NaN regression target": (b"text,label\ngood,1.5\nbad,\nok,2\n", ["task=text-regression"],
                              ["needs a finite number", "row 3 is empty"]),
    "text regression target": (b"text,label\ngood,1.5\nbad,high\nok,2\n", ["task=text-regression"],
                               ["needs a finite number", "row 3 holds 'high'"]),
    "inf regression target": (b"text,label\ngood,1.5\nbad,inf\nok,2\n", ["task=text-regression"],
                              ["row 3 holds inf"]),
    "single class": (b"text,label\ngood,pos\ngreat,pos\nfine,pos\n", [],
                     ["holds a single class ('pos')", "needs at least two"]),
    "too few to split": (b"text,label\ngood,1\nbad,2\n", ["task=text-regression"],
                         ["has only 2 example(s)", "data.val_fraction=0.1", "give data.validation"]),
    "latin-1 bytes": ("text,label\ngood,pos\ncafé,neg\n".encode("latin-1"), [],
                      ["is not UTF-8: byte 0xe9 at offset 23 (line 3)", "re-save the file as UTF-8"]),
    "unterminated quote": (b'text,label\n"good,pos\nbad,neg\n', [], ["could not be read as CSV", "quote fields"]),
    "ragged rows": (b"text,label\ngood,pos\nbad,neg,extra,more\n", [], ["could not be read as CSV", "line 3"]),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_file_is_one_sentence(case, tiny_bert, tmp_path, capsys):
    content, extra, fragments = DATA_CASES[case]
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_bytes(content)
    message = user_error(capsys, "validate", f"model={tiny_bert}", f"data.train={path}", *extra)
    assert f"data file '{path}'" in message
    for fragment in fragments:
        assert fragment in message


JSONL_CASES = {
    "bad line": (b'{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"\n', ".jsonl",
                 ["line 2 is not valid JSON (Expecting ',' delimiter at column 31)"]),
    "not objects": (b'{"text": "good", "label": "pos"}\n\n[1, 2]\n', ".jsonl",
                    ["line 3 holds a JSON array, not an object"]),
    "broken array": (b'[{"text": "good", "label": "pos"},\n {"text": "bad" "label": "neg"}]', ".json",
                     ["is not valid JSON: Expecting ',' delimiter at line 2"]),
    "wrong extension": (GOOD.encode(), ".txt", ["has extension '.txt'", ".csv, .json, .jsonl, .parquet, .tsv"]),
    "commas in a .tsv": (GOOD.encode(), ".tsv", ["separated by commas", "rename it to .csv"]),
}


@pytest.mark.parametrize("case", JSONL_CASES)
def test_malformed_json_and_extensions_name_the_line(case, tiny_bert, tmp_path, capsys):
    content, suffix, fragments = JSONL_CASES[case]
    path = tmp_path / f"data{suffix}"
    path.write_bytes(content)
    message = user_error(capsys, "validate", f"model={tiny_bert}", f"data.train={path}")
    assert message.startswith(f"error: data file '{path}'")
    for fragment in fragments:
        assert fragment in message


def test_jsonl_rows_are_named_by_their_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "good", "label": "pos"}\n\n{"text": "", "label": "neg"}\n', encoding="utf-8")
    with pytest.raises(LobellError, match="first at line 3"):
        load_splits(DataConfig(train=path, validation=path), "classification", 0)


def test_json_array_and_byte_order_mark_are_read(tmp_path):
    array = tmp_path / "data.json"
    array.write_text(json.dumps([{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]))
    assert read_table(array)["label"].tolist() == ["pos", "neg"]
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert list(read_table(bom).columns) == ["text", "label"]


def test_unreadable_file_says_permission_denied(tmp_path, monkeypatch, capsys, tiny_bert):
    path = tmp_path / "locked.csv"
    path.write_text(GOOD)

    def refuse(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)  # root reads any file, whatever chmod says
    message = user_error(capsys, "validate", f"model={tiny_bert}", f"data.train={path}")
    assert f"data file '{path}' cannot be read: permission denied" in message and "chmod u+r" in message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_by_mode(tmp_path, capsys, tiny_bert):
    path = tmp_path / "locked.csv"
    path.write_text(GOOD)
    path.chmod(0)
    assert "permission denied" in user_error(capsys, "validate", f"model={tiny_bert}", f"data.train={path}")


def test_labels_unseen_in_train_name_the_row(tiny_bert, tmp_path, capsys):
    train, validation = tmp_path / "train.csv", tmp_path / "validation.csv"
    train.write_text(GOOD)
    validation.write_text("text,label\ngood,pos\nso so,meh\nfine,pos\nokay,meh\n")
    message = user_error(capsys, "validate", f"model={tiny_bert}", f"data.train={train}",
                         f"data.validation={validation}")
    assert (f"data file '{validation}' column 'label' holds label(s) ['meh'] that never occur in the training data "
            f"(2 row(s), first at row 3; known: ['neg', 'pos'])") in message


def test_multi_label_unseen_labels_name_the_row(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("text,label\na,x|y\nb,y\nc,x\n")
    test.write_text("text,label\na,x\nb,y|z\n")
    with pytest.raises(LobellError, match=r"holds label\(s\) \['z'\] .*first at row 3"):
        load_splits(DataConfig(train=train, validation=train, test=test), "multi-label", 0)


def test_split_that_leaves_train_one_class_is_refused(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\na,pos\nb,pos\nc,neg\n")
    with pytest.raises(LobellError, match="training split .* holds a single class"):
        load_splits(DataConfig(train=train, val_fraction=0.3), "classification", seed=0)


def test_one_training_example_is_refused(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\ngood,1.5\n")
    with pytest.raises(LobellError, match=r"only 1 training example\(s\) .* at least 2"):
        load_splits(DataConfig(train=train, validation=train), "regression", 0)


def test_duplicates_conflicts_and_leaks_are_noted(tmp_path):
    train, validation = tmp_path / "train.csv", tmp_path / "validation.csv"
    train.write_text("text,label\ngood,pos\ngood,pos\ngood,pos\nbad,neg\nbad,pos\nok,neg\n")
    validation.write_text("text,label\ngood,pos\nfresh,neg\n")
    notes = load_splits(DataConfig(train=train, validation=validation), "classification", 0).notes
    assert "train: 2 duplicated row(s) in" in notes[0] and "kept" in notes[0]
    assert "train: 1 input(s) in" in notes[1] and "occur with different labels" in notes[1]
    assert notes[2].startswith("validation: 1 of 2 inputs also occur in the training data")


def test_numeric_texts_and_fewer_examples_than_a_batch_train(tiny_bert, tmp_path, capsys):
    train, validation = tmp_path / "train.csv", tmp_path / "validation.csv"
    train.write_text("text,label\n" + "".join(f"{i},{'pos' if i % 2 else 'neg'}\n" for i in range(12)))
    validation.write_text("text,label\n100,pos\n101,neg\n")
    run = tmp_path / "run"
    assert main(quick_run(tiny_bert, {"train": train, "validation": validation}, run, "batch_size=32")) == 0
    predictions = [json.loads(line) for line in (run / "predictions_validation.jsonl").read_text().splitlines()]
    assert [p["input"] for p in predictions] == ["100", "101"]
    assert len(json.loads((run / "lrs.json").read_text())) == 1  # one step: a single batch of 12 < 32


def test_long_texts_are_truncated_counted_and_reported(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = ["good film", "good " * 6, "good " * 7, "good " * 300]  # 4, 8, 9 and 302 tokens with [CLS]/[SEP]
    dataset = TokenizedText(tokenizer, texts, np.zeros(4), max_length=8)
    assert dataset.truncated == 2 and dataset.lengths() == [4, 8, 8, 8]
    assert dataset.input_ids[3][-1] == tokenizer.sep_token_id
    short = TokenizedText(tokenizer, texts[:1], np.zeros(1), 8)
    note = ("train: 2 of 4 texts are longer than 8 tokens and were truncated (the model reads only their start; "
            "data.max_length)")
    assert truncation_notes({"train": dataset, "validation": short}) == [note]


def test_max_length_beyond_the_position_table_is_refused(tiny_bert, small_files, tmp_path, capsys):
    message = user_error(capsys, *quick_run(tiny_bert, small_files, tmp_path / "run", "data.max_length=1000"))
    assert "data.max_length=1000 is longer than" in message and "64 positions" in message
    assert not (tmp_path / "run" / "model").exists()


# --- Config -------------------------------------------------------------------------------------

CONFIG_CASES = {
    "unknown key": (["optimiser.lr=1e-4"], "unknown key 'optimiser' (did you mean 'optimizer'?)"),
    "unknown nested key": (["strategy.max_grups=2"], "unknown key 'strategy.max_grups' (did you mean 'max_groups'?)"),
    "wrong type": (["epochs=three"], "epochs='three' is invalid: Input should be a valid integer"),
    "wrong section type": (["optimizer=[1, 2]"], "optimizer=[1, 2] is invalid: Input should be a valid dictionary"),
    "lr zero": (["optimizer.lr=0"], "optimizer.lr=0 is invalid: Input should be greater than 0"),
    "lr negative": (["optimizer.lr=-1e-5"], "optimizer.lr=-1e-05 is invalid: Input should be greater than 0"),
    "batch size zero": (["batch_size=0"], "batch_size=0 is invalid: Input should be greater than or equal to 1"),
    "epochs zero": (["epochs=0"], "epochs=0 is invalid: Input should be greater than or equal to 1"),
    "dropout one": (["task=image-classification", "head.dropout=1.0"],
                    "head.dropout=1.0 is invalid: Input should be less than 1"),
    "two-stage without an unfrozen epoch": (["strategy=two-stage", "epochs=2", "strategy.frozen_epochs=2"],
                                            "leaves no epoch for the unfrozen stage"),
    "not key=value": (["epochs"], "'epochs' is not KEY=VALUE"),
    "offline model": (["model=no-such-org/no-such-model"], "model 'no-such-org/no-such-model' is not a local folder"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_is_one_sentence(case, tiny_bert, capsys):
    overrides, fragment = CONFIG_CASES[case]
    args = [f"model={tiny_bert}", *overrides] if "model=" not in overrides[0] else overrides
    assert fragment in user_error(capsys, "validate", *args)


def test_bad_yaml_file_names_the_file(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("epochs: [1,\n")
    assert f"config file '{config}' is not valid YAML" in user_error(capsys, "validate", str(config))
    config.write_text("- 1\n- 2\n")
    assert "must hold a mapping of keys, not list" in user_error(capsys, "validate", str(config))


def test_weights_that_do_not_fit_the_architecture_name_the_keys(tmp_path, capsys):
    from safetensors.torch import save_file
    from vision_fixtures import make_class_folders

    images = make_class_folders(tmp_path / "images", per_class=3, size=16)
    weights = tmp_path / "wrong.safetensors"
    save_file({"features.0.0.weight": torch.zeros(8, 3, 3, 3), "bogus.weight": torch.zeros(1)}, weights)
    message = user_error(capsys, "train", "--quiet", "task=image-classification",
                         "model=torchvision/mobilenet_v3_small", f"model_weights={weights}", f"data.train={images}",
                         f"data.validation={images}", f"output_dir={tmp_path / 'run'}")
    assert f"weights file '{weights}' does not fit torchvision/mobilenet_v3_small" in message
    assert "unexpected bogus.weight" in message
    assert "shape of features.0.0.weight (8, 3, 3, 3) in the file vs (16, 3, 3, 3) in the model" in message


# --- Runtime ------------------------------------------------------------------------------------

def test_non_finite_loss_names_the_step_and_keeps_the_last_checkpoint(tiny_bert, small_files, tmp_path, capsys):
    NAN_AT_STEP.update(step=4, seen=0)
    run = tmp_path / "run"
    message = user_error(capsys, *quick_run(tiny_bert, small_files, run, f"loss.name={__name__}:nan_after_steps",
                                            "checkpoint.every_steps=1"))
    assert "the loss became nan at step 4 of epoch 1/1" in message and "lower optimizer.lr" in message
    latest = ckpt.latest_checkpoint(run)
    assert latest is not None and latest.name == "step-000000003"
    state, weights, *_ = ckpt.load_checkpoint(latest)
    assert state.global_step == 3 and all(torch.isfinite(w).all() for w in weights.values())
    assert not (run / "model").exists() and not (run / ".lock").exists()
    assert not list(run.rglob("*.tmp"))


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tiny_bert, small_files, tmp_path, capsys,
                                                                     monkeypatch):
    from lobell.training import checkpoint

    real_save, calls = checkpoint.save_file, []

    def fill_up(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # the third checkpoint finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", fill_up)
    run = tmp_path / "run"
    message = user_error(capsys, *quick_run(tiny_bert, small_files, run, "checkpoint.every_steps=1"))
    assert message.startswith(f"error: the disk is full: writing '{run / 'checkpoints' / 'step-000000003'}' failed")
    assert "files written before are intact" in message
    state, *_ = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    assert state.global_step == 2
    assert not (run / "model").exists() and not list(run.rglob("*.tmp"))


@pytest.mark.parametrize("writer", ["text", "json", "dir"])
def test_disk_full_leaves_the_previous_file_and_no_temporary(writer, tmp_path, monkeypatch):
    target = tmp_path / ("model" if writer == "dir" else "metrics.json")
    if writer == "dir":
        run_files.atomic_write_dir(target, lambda d: (d / "weights.bin").write_bytes(b"old"))
    else:
        run_files.atomic_write_text(target, "old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_files.os, "replace", full)
    with pytest.raises(LobellError, match=f"the disk is full: writing '{target}' failed \\(No space left on device\\)"):
        if writer == "text":
            run_files.atomic_write_text(target, "new")
        elif writer == "json":
            run_files.atomic_write_json(target, {"new": 1})
        else:
            run_files.atomic_write_dir(target, lambda d: (d / "weights.bin").write_bytes(b"new"))
    assert (target / "weights.bin" if writer == "dir" else target).read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_disk_full_from_safetensors_and_torch_save_is_recognised(tmp_path):
    from safetensors import SafetensorError

    for error in (SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
                  RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
                  OSError(errno.EDQUOT, "Disk quota exceeded")):
        def fill(folder, error=error):
            raise error

        with pytest.raises(LobellError, match="the disk is full"):
            run_files.atomic_write_dir(tmp_path / "checkpoint", fill)
    # Other errors are not disguised as a full disk.
    with pytest.raises(OSError, match="Permission denied"), run_files.disk_errors(tmp_path):
        raise OSError(errno.EACCES, "Permission denied")


def test_append_jsonl_never_leaves_half_a_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    run_files.append_jsonl(path, {"epoch": 0})
    real_write = os.write

    def half(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_files.os, "write", half)
    with pytest.raises(LobellError, match=f"writing '{path}' failed"):
        run_files.append_jsonl(path, {"epoch": 1, "validation": {"accuracy": 0.5}})
    assert path.read_text() == '{"epoch": 0}\n'


def test_interrupted_directory_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / "model"
    run_files.atomic_write_dir(target, lambda d: (d / "weights.bin").write_bytes(b"old"))

    def interrupted(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_files.atomic_write_dir(target, interrupted)
    assert (target / "weights.bin").read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_out_of_memory_names_the_batch_size_and_suggests_auto():
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(LobellError) as error, faults.out_of_memory_as_user_error("batch_size", 64, "training epoch 2"):
        raise oom
    assert str(error.value) == ("out of memory during training epoch 2 with batch_size=64; set batch_size: auto (the "
                                "largest batch that fits; grad_accum keeps the effective batch) or a smaller one, e.g. "
                                "batch_size=32 grad_accum=2")
    assert error.value.__cause__ is oom
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                       "allocate 1099511627776 bytes")
    evaluation = faults.out_of_memory_as_user_error("eval_batch_size", 16, "evaluation")
    with pytest.raises(LobellError, match="evaluation with eval_batch_size=16; set eval_batch_size=8"), evaluation:
        raise cpu
    smallest = faults.out_of_memory_as_user_error("batch_size", 1, "training epoch 1")
    with pytest.raises(LobellError, match="batch_size=1; use a smaller model, precision=bf16"), smallest:
        raise torch.OutOfMemoryError("out of memory")
    bug = faults.out_of_memory_as_user_error("batch_size", 8, "training epoch 1")
    with pytest.raises(RuntimeError, match="size mismatch"), bug:  # a bug keeps its traceback
        raise RuntimeError("size mismatch for weight")


# --- lobell predict and evaluate ------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tiny_bert, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    files = {}
    for name, n, seed in [("train", 24, 1), ("validation", 8, 2)]:
        files[name] = root / f"{name}.csv"
        sentiment_rows(n, seed).to_csv(files[name], index=False)
    assert main(quick_run(tiny_bert, files, root / "run")) == 0
    return root / "run"


def test_predict_with_inputs_that_do_not_fit_the_run(finished_run, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    message = user_error(capsys, "predict", str(finished_run), str(folder))
    assert f"data file '{folder}' is a folder; text tasks need a .csv" in message
    table = tmp_path / "reviews.csv"
    table.write_text("review\ngood film\n")
    message = user_error(capsys, "predict", str(finished_run), str(table))
    assert f"data file '{table}' has no column 'text' (data.text_column); its columns are: review" in message
    message = user_error(capsys, "evaluate", str(finished_run), str(table))
    assert "has no column 'text'" in message


@pytest.mark.parametrize("damage, fragment", [
    ("model", "has no model: the run did not finish"),
    ("config.yaml", "has no config.yaml: the run did not finish"),
    ("model/lobell.json", "has no model/lobell.json: the model folder is incomplete"),
    ("model/model.safetensors", "its model/ folder could not be loaded"),
])
def test_predict_from_an_incomplete_run_folder(damage, fragment, finished_run, tmp_path, capsys):
    run = shutil.copytree(finished_run, tmp_path / "run")
    target = run / damage
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    data = tmp_path / "inputs.csv"
    data.write_text("text\ngood film\n")
    message = user_error(capsys, "predict", str(run), str(data))
    assert f"run folder '{run}'" in message and fragment in message


def test_predict_from_a_damaged_model_description(finished_run, tmp_path, capsys):
    run = shutil.copytree(finished_run, tmp_path / "run")
    (run / "model" / "lobell.json").write_text("{not json")
    data = tmp_path / "inputs.csv"
    data.write_text("text\ngood film\n")
    assert "lobell.json in model/ cannot be read" in user_error(capsys, "predict", str(run), str(data))
    assert "does not exist" in user_error(capsys, "predict", str(tmp_path / "nowhere"), str(data))


def test_a_failed_run_never_replaces_a_finished_one(finished_run, small_files, tiny_bert, capsys):
    before = (finished_run / "model" / "model.safetensors").read_bytes()
    message = user_error(capsys, *quick_run(tiny_bert, small_files, finished_run))
    assert "already holds a run" in message
    assert (finished_run / "model" / "model.safetensors").read_bytes() == before
