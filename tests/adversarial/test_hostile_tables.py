"""Hostile tables: each is either one `error:` line naming file, column and row (exit 2) or trains by a
documented rule (docs/errors.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import sentiment_rows
from test_bad_input import user_error

from lobell.cli import main


def _rows(n: int = 40) -> pd.DataFrame:
    return sentiment_rows(n, 1)


def _write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif path.suffix == ".parquet":
        content.to_parquet(path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in content))
    else:
        content.to_csv(path, index=False)
    return path


def _bad_jsonl_line() -> bytes:
    lines = [json.dumps(r) for r in _rows().to_dict("records")]
    lines[5] = lines[5][:-3]  # line 6 cut short
    return ("\n".join(lines) + "\n").encode()


def _with(column: str, values) -> pd.DataFrame:
    frame = _rows()
    frame[column] = values
    return frame


ERRORS = {
    "NUL bytes": ("t.csv", b"text,label\ngood film,pos\nbad\x00 film,neg\ngreat,pos\ndull,neg\n",
                  ["'t.csv' holds a NUL byte (0x00) at offset 28 (line 3)", "re-save it as UTF-8 text"]),
    "mixed encodings": ("t.csv", "text,label\ncaf\u00e9 good,pos\n".encode() + "caf\u00e9 bad,neg\n".encode("latin-1")
                        + b"great,pos\ndull,neg\n", ["is not UTF-8: byte 0xe9 at offset 29 (line 3)"]),
    "empty label column": ("t.csv", _with("label", ""), ["has 40 missing label(s) in column 'label', first at row 2"]),
    "duplicate column names": ("t.csv", b"text,label,label\ngood,pos,neg\nbad,neg,pos\ngreat,pos,pos\n",
                               ["has more than one column named 'label'"]),
    "duplicate keys in a .jsonl": ("t.jsonl", b'{"text": "good", "label": "pos"}\n'
                                              b'{"text": "bad", "label": "neg", "label": "pos"}\n',
                                   ["line 2 has the key 'label' more than once"]),
    "one bad line in a .jsonl": ("t.jsonl", _bad_jsonl_line(), ["'t.jsonl' line 6 is not valid JSON"]),
    "parquet bytes as text": ("t.parquet", _with("text", [b"good film"] * 40),
                              ["'t.parquet' column 'text' holds bytes at row 1, not text"]),
    "parquet lists as labels": ("t.parquet", _with("label", [["pos", "neg"]] * 40),
                                ["column 'label' holds a list at row 1, not a class name"]),
    "parquet objects as labels": ("t.parquet", _with("label", [{"name": "pos"}] * 40),
                                  ["column 'label' holds an object at row 1, not a class name"]),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_hostile_table_is_one_error_naming_where(case, tiny_bert, tmp_path, capsys, monkeypatch):
    name, content, fragments = ERRORS[case]
    monkeypatch.chdir(tmp_path)  # the message names the file as given: t.csv
    _write(tmp_path / name, content)
    for command in ("validate", "train"):
        extra = ["--quiet", f"output_dir={tmp_path / 'run'}", "epochs=1"] if command == "train" else []
        message = user_error(capsys, command, *extra[:1], f"model={tiny_bert}", f"data.train={name}", *extra[1:])
        assert all(fragment in message for fragment in fragments), message
    assert not (tmp_path / "run").exists()


def _train(tiny_bert, train: Path, tmp_path: Path, *extra: str) -> tuple[Path, str]:
    run = tmp_path / "run"
    flags = [e for e in extra if e.startswith("--")]
    args = ["train", *flags, f"model={tiny_bert}", f"data.train={train}", "epochs=1", "batch_size=32",
            "precision=fp32", f"output_dir={run}", *(e for e in extra if not e.startswith("--"))]
    return run, args


def test_a_1mb_cell_is_truncated_and_noted(tiny_bert, tmp_path, capsys):
    frame = _rows()
    frame.loc[3, "text"] = "good " * 200_000  # 1 MB
    run, args = _train(tiny_bert, _write(tmp_path / "big.csv", frame), tmp_path)
    assert main(args) == 0
    assert "texts are longer than 64 tokens and were truncated" in capsys.readouterr().err


def test_mixed_number_and_string_labels_are_one_label_space_of_text(tiny_bert, tmp_path):
    """JSON 1, 1.0 and "1" are the same class "1"; "neg" stays "neg"."""
    records = [{"text": r["text"], "label": (1 if i % 3 else 1.0) if r["label"] == "pos" else "neg"}
               for i, r in enumerate(_rows().to_dict("records"))]
    records[0]["label"] = "1" if records[0]["label"] != "neg" else "neg"
    run, args = _train(tiny_bert, _write(tmp_path / "mixed.jsonl", records), tmp_path, "--quiet")
    assert main(args) == 0
    assert json.loads((run / "model" / "lobell.json").read_text())["labels"] == ["1", "neg"]


def test_numbers_in_a_parquet_text_column_are_read_as_text(tiny_bert, tmp_path):
    run, args = _train(tiny_bert, _write(tmp_path / "ints.parquet", _with("text", range(40))), tmp_path, "--quiet")
    assert main(args) == 0


def test_10000_classes_train_and_report(tiny_bert, tmp_path, capsys):
    """No limit on classes; the report's confusion matrix shows the 50 most frequent (a 10,000 x 10,000 one
    would take minutes and 800 MB)."""
    train = _write(tmp_path / "train.csv", pd.DataFrame({"text": [f"good film {i}" for i in range(10_000)],
                                                         "label": [f"c{i}" for i in range(10_000)]}))
    validation = _write(tmp_path / "validation.csv", pd.DataFrame({"text": [f"good film {i}" for i in range(200)],
                                                                   "label": [f"c{i % 100}" for i in range(200)]}))
    run, args = _train(tiny_bert, train, tmp_path, "--quiet", f"data.validation={validation}", "batch_size=256")
    assert main(args) == 0
    assert len(json.loads((run / "model" / "lobell.json").read_text())["labels"]) == 10_000
    assert "10000 classes: the confusion matrix shows the 50 most frequent" in (run / "report.html").read_text()
