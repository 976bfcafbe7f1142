"""Data files (csv, tsv, jsonl, parquet) -> checked columns, labels and splits, with clear errors.

Every failure is one sentence that names the file and, where there is one, the row or line at
fault and how to fix it: rows count like a spreadsheet (the header is row 1), JSONL counts lines.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from lobell.errors import LobellError, nearest

READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
_SEPARATORS = {"csv": ",", "tsv": "\t"}
# Separators a mis-saved table uses instead of the one its extension promises (Excel in many
# locales writes ';'), with the fix for each.
_OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "pipes", ",": "commas"}
# A training run needs at least two examples to take one optimizer step that means anything.
MIN_TRAIN_EXAMPLES = 2


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a data file into a DataFrame; every failure is one sentence naming the file."""
    path = Path(path)
    kind = _check_file(path)
    if kind == "parquet":
        frame = _read_parquet(path)
    else:
        raw = _read_bytes(path)
        _check_nul(path, raw)
        text = _decode(path, raw)
        if not text.strip():
            raise LobellError(f"data file '{path}' is empty (only whitespace); it needs a header and rows")
        frame = _read_json_records(path, text) if kind == "jsonl" else _read_delimited(path, text, kind)
    duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if duplicated:
        raise LobellError(f"data file '{path}' has more than one column named {duplicated[0]!r}; rename or drop "
                          f"the extra one(s) so that each column name is unique")
    if len(frame) == 0:
        columns = ", ".join(str(c) for c in frame.columns)
        raise LobellError(f"data file '{path}' has a header ({columns}) but no rows; add examples below it"
                          if columns else f"data file '{path}' holds no rows")
    return frame


def _check_file(path: Path) -> str:
    if not path.exists():
        raise LobellError(f"data file '{path}' does not exist; check the path (relative paths start from "
                          f"{Path.cwd()})")
    if path.is_dir():
        raise LobellError(f"data file '{path}' is a folder; text tasks need a .csv, .tsv, .jsonl or .parquet file")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        extension = f"extension '{path.suffix}'" if path.suffix else "no extension"
        raise LobellError(f"data file '{path}' has {extension}; lobell reads {', '.join(sorted(READERS))}: rename "
                          f"or convert it")
    if path.stat().st_size == 0:
        raise LobellError(f"data file '{path}' is empty (0 bytes); it needs a header and rows")
    return kind


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError:
        raise LobellError(f"data file '{path}' cannot be read: permission denied; give your user read access "
                          f"(e.g. chmod u+r '{path}')") from None
    except OSError as exc:
        raise LobellError(f"data file '{path}' cannot be read: {exc.strerror or exc}") from None


def _check_nul(path: Path, raw: bytes) -> None:
    """A NUL byte never belongs in a text table: the file is binary, UTF-16, or was cut by a crash."""
    at = raw.find(b"\0")
    if at >= 0:
        line = raw.count(b"\n", 0, at) + 1
        raise LobellError(f"data file '{path}' holds a NUL byte (0x00) at offset {at} (line {line}): it is not a "
                          f"UTF-8 text table (binary, UTF-16, or damaged); re-save it as UTF-8 text or remove "
                          f"that byte")


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 text (a leading byte-order mark dropped); a bad byte is named by offset and line."""
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise LobellError(f"data file '{path}' is not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
                          f"(line {line}) cannot be decoded; re-save the file as UTF-8 (e.g. `iconv -f latin1 "
                          f"-t utf-8`)") from None


def _read_delimited(path: Path, text: str, kind: str) -> pd.DataFrame:
    separator = _SEPARATORS[kind]
    _check_separator(path, text.split("\n", 1)[0], separator)
    header = next(csv.reader(io.StringIO(text), delimiter=separator), [])
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:  # pandas would rename the second 'label' to 'label.1' and go on with the first one
        raise LobellError(f"data file '{path}' has more than one column named {repeated[0]!r} (header: "
                          f"{_printable(separator.join(header))[:200]}); rename or drop the extra one(s) so that "
                          f"each column name is unique")
    try:
        return pd.read_csv(io.StringIO(text), sep=separator)
    except pd.errors.EmptyDataError:
        raise LobellError(f"data file '{path}' has no header row; its first line must name the columns") from None
    except (pd.errors.ParserError, ValueError) as exc:
        reason = _first_line(exc).removeprefix("Error tokenizing data. C error: ")
        raise LobellError(f"data file '{path}' could not be read as {kind.upper()}: {reason}; quote fields that "
                          f"contain '{_printable(separator)}', quotes or line breaks") from None


def _check_separator(path: Path, header: str, separator: str) -> None:
    """A header without the expected separator but with another one: the file was saved differently."""
    if separator in header:
        return
    for other, name in _OTHER_SEPARATORS.items():
        if other != separator and other in header:
            if other == "\t":
                fix = "rename it to .tsv"
            elif other == ",":
                fix = "rename it to .csv"
            else:
                fix = "re-save it comma-separated"
            raise LobellError(f"data file '{path}' has a single column '{_printable(header.strip())}': its header is "
                              f"separated by {name}, not '{_printable(separator)}'; {fix}")


def _read_json_records(path: Path, text: str) -> pd.DataFrame:
    """JSON Lines (one object per line; blank lines skipped), or a .json array of objects."""
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LobellError(f"data file '{path}' is not valid JSON: {exc.msg} at line {exc.lineno}, column "
                              f"{exc.colno}") from None
        lines = list(range(1, len(records) + 1))
        where = "item"
    else:
        records, lines, where = [], [], "line"
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line, object_pairs_hook=_unique_keys))
            except _RepeatedKey as exc:
                raise LobellError(f"data file '{path}' line {number} has the key {exc.args[0]!r} more than once; "
                                  f"each key must appear once per line") from None
            except json.JSONDecodeError as exc:
                raise LobellError(f"data file '{path}' line {number} is not valid JSON ({exc.msg} at column "
                                  f"{exc.colno}); each line must be one object, e.g. "
                                  f'{{"text": "...", "label": "..."}}') from None
            lines.append(number)
    for record, number in zip(records, lines):
        if not isinstance(record, dict):
            raise LobellError(f"data file '{path}' {where} {number} holds {_json_kind(record)}, not an object; each "
                              f'record must look like {{"text": "...", "label": "..."}}')
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    frame.attrs["line_numbers"] = lines
    return frame


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise _RepeatedKey(key)
    return dict(pairs)


def _wrong_kind(values: pd.Series, path: str | Path, column: str, frame: pd.DataFrame, what: str) -> None:
    """Values that are not text or numbers (bytes, lists, objects from parquet or JSON): named by row."""
    for index, value in enumerate(values.tolist()):
        if isinstance(value, (bytes, bytearray, list, tuple, dict, set, np.ndarray)):
            kind = {bytes: "bytes", bytearray: "bytes", dict: "an object"}.get(type(value), "a list")
            raise LobellError(f"data file '{path}' column '{column}' holds {kind} at {row_name(path, index, frame)}, "
                              f"not {what}; store plain text or numbers in it")


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a JSON true/false"
    kinds = {list: "a JSON array", str: "a JSON string", int: "a JSON number", float: "a JSON number"}
    return kinds.get(type(value), f"a JSON {type(value).__name__}")


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except PermissionError:
        raise LobellError(f"data file '{path}' cannot be read: permission denied; give your user read access "
                          f"(e.g. chmod u+r '{path}')") from None
    except (ValueError, OSError, ImportError) as exc:
        raise LobellError(f"data file '{path}' could not be read as parquet: {_first_line(exc)}") from None


def row_name(path: str | Path, index: int, frame: pd.DataFrame | None = None) -> str:
    """Where the `index`-th record of a file sits, as its user sees it in an editor or spreadsheet."""
    lines = frame.attrs.get("line_numbers") if frame is not None else None
    if lines is not None and len(lines) == len(frame) and index < len(lines):
        return f"line {lines[index]}"
    kind = READERS.get(Path(str(path)).suffix.lower())
    if kind in ("csv", "tsv"):
        return f"row {index + 2}"
    if kind == "jsonl":
        return f"line {index + 1}"
    if kind == "parquet":
        return f"row {index + 1}"
    return f"index {index}"


def require_columns(frame: pd.DataFrame, columns: dict[str, str], path: str | Path) -> None:
    """Check that each `{config_key: column}` exists, suggesting the nearest existing column."""
    existing = [str(c) for c in frame.columns]
    for key, column in columns.items():
        if column not in frame.columns:
            hint = nearest(column, existing)
            fix = f"; rename the column or set {key}" if not hint else ""
            raise LobellError(f"data file '{path}' has no column '{column}' ({key}){hint}; its columns are: "
                              f"{', '.join(existing)}{fix}")


def text_column(frame: pd.DataFrame, column: str, path: str | Path) -> list[str]:
    """The column's values as strings (numbers too); an empty or missing value is an error."""
    values = frame[column]
    if values.dtype == object:
        _wrong_kind(values, path, column, frame, "text")
    missing = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise LobellError(f"data file '{path}' has {int(missing.sum())} empty value(s) in column '{column}', first "
                          f"at {row_name(path, first, frame)}; fill or drop those rows")
    return values.astype(str).tolist()


@dataclass
class LabelSpace:
    """The classes of a classification task, in a fixed order (sorted)."""

    names: list[str]

    @classmethod
    def from_values(cls, values: list[str]) -> LabelSpace:
        return cls(sorted(set(values), key=_natural_key))

    def encode(self, values: list[str], path: str | Path, column: str,
               frame: pd.DataFrame | None = None) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.names)}
        bad = [i for i, v in enumerate(values) if v not in index]
        if bad:
            raise self.unknown_error([values[i] for i in bad], path, column, row_name(path, bad[0], frame), len(bad))
        return np.array([index[v] for v in values], dtype=np.int64)

    def unknown_error(self, unknown: list[str], path: str | Path, column: str, first: str,
                      rows: int) -> LobellError:
        """Labels outside the training data's classes: the model has no output for them."""
        return LobellError(f"data file '{path}' column '{column}' holds label(s) {sorted(set(unknown))[:5]} that "
                           f"never occur in the training data ({rows} row(s), first at {first}; known: "
                           f"{self.names[:10]}); fix or drop those rows, or add examples of them to the training data")


def label_strings(frame: pd.DataFrame, column: str, path: str | Path) -> list[str]:
    """Class names as text: 1, 1.0 and "1" are one class (a JSON file may mix numbers and strings)."""
    values = frame[column]
    if values.dtype == object:
        _wrong_kind(values, path, column, frame, "a class name")
    missing = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise LobellError(f"data file '{path}' has {int(missing.sum())} missing label(s) in column '{column}', "
                          f"first at {row_name(path, first, frame)}; fill or drop those rows")
    return [_label_text(v) for v in values.tolist()]


def _label_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _natural_key(name: str):
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _printable(text: str) -> str:
    return text.replace("\t", "\\t")


def split_train_validation(n: int, targets: np.ndarray | None, fraction: float, seed: int,
                           source: str = "the training data") -> tuple[np.ndarray, np.ndarray]:
    """Indices of a (stratified where possible) train/validation split of `source`'s `n` examples."""
    indices = np.arange(n)
    n_val = max(1, round(n * fraction))
    if n - n_val < MIN_TRAIN_EXAMPLES:
        raise LobellError(f"{source} has only {n} example(s): too few to hold out data.val_fraction={fraction} for "
                          f"validation and keep {MIN_TRAIN_EXAMPLES} to train on; add data or give data.validation")
    stratify = None
    if targets is not None:
        _, counts = np.unique(targets, return_counts=True)
        if counts.min() >= 2 and n_val >= len(counts):
            stratify = targets
    train, val = train_test_split(indices, test_size=n_val, stratify=stratify, random_state=seed)
    return np.sort(train), np.sort(val)


def resolve_paths(values: list[str], table: Path, frame: pd.DataFrame, kind: str) -> list[str]:
    """File paths (images, audio) relative to the data file, which must stay inside its folder
    (absolute paths are taken as given): a `../` that escapes the folder is a wrong base or a
    path-traversal entry in a shared data set, so it is refused with the row named."""
    folder = table.parent.resolve()
    paths = []
    for row, value in enumerate(values):
        if Path(value).is_absolute():
            paths.append(value)
            continue
        resolved = (folder / value).resolve()
        if not resolved.is_relative_to(folder):
            raise LobellError(f"data file '{table}' {row_name(table, row, frame)}: {kind} path '{value}' points outside "
                              f"the file's folder '{table.parent}'; relative {kind} paths are read from that folder, so "
                              f"move the files under it or write an absolute path")
        paths.append(str(table.parent / value))
    return paths


def missing_or_empty(path: Path) -> str | None:
    """Why the file at `path` holds nothing to read (it does not exist, or has 0 bytes), or None."""
    if not path.is_file():
        return "the file does not exist"
    if path.stat().st_size == 0:
        return "the file is empty (0 bytes)"
    return None


def media_files(folder: Path, extensions: set[str]) -> list[Path]:
    """Files under `folder` whose suffix is in `extensions` (recursively, sorted), skipping hidden ones."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in extensions and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_media_folder(path: Path, input_column: str, label_column: str | None, problem: str, extensions: set[str],
                      kind: str, example: str):
    """Every `kind` file under `path` (prediction), or one sub-folder per class (classification).

    Returns (paths, labels or None, frame); `example` names a file in a class folder for the error
    that says how to lay the folder out (e.g. "cat/1.jpg").
    """
    if label_column is None:
        paths = [str(p) for p in media_files(path, extensions)]
        if not paths:
            raise LobellError(f"folder '{path}' holds no {kind} files ({', '.join(sorted(extensions))})")
        return paths, None, pd.DataFrame({input_column: paths})
    if problem != "classification":
        raise LobellError(f"folder '{path}': class folders give single class labels; {problem} data needs a CSV or "
                          f"JSONL with data.{kind}_column and data.label_column")
    classes = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels = [], []
    for folder in classes:
        files = [str(p) for p in media_files(folder, extensions)]
        paths += files
        labels += [folder.name] * len(files)
    if not paths:
        loose = f"holds {kind} files but no class sub-folders" if media_files(path, extensions) else \
            f"holds no class sub-folders with {kind} files"
        raise LobellError(f"folder '{path}' {loose}: put each class's files in a sub-folder named after the class "
                          f"(e.g. {path}/{example}), or give a CSV with {kind} paths and labels")
    return paths, labels, pd.DataFrame({input_column: paths, label_column: labels})
