"""Fuzz: malformed data files and configs never crash lobell: exit 2, one `error:` line, no partial model/.

Every generated input is broken by construction, so each example fails before a model loads and
the whole file stays well under a minute.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lobell.cli import main
from lobell.config import STRATEGIES, Config

FUZZ = settings(max_examples=25, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

WORDS = ["good", "bad", "film", "plot", "dull", "great", "the", "a"]
safe_texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=5).map(" ".join)
# Any text at all: quotes, separators, line breaks, unicode; pandas quotes it when writing.
wild_texts = st.text(min_size=1, max_size=30)
rows = st.lists(st.tuples(st.one_of(safe_texts, wild_texts), st.sampled_from(["pos", "neg", "meh"])),
                min_size=1, max_size=8)


def _csv(records: list[dict], sep: str = ",") -> bytes:
    return pd.DataFrame(records).to_csv(index=False, sep=sep).encode("utf-8")


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


@st.composite
def broken_table(draw) -> tuple[str, bytes, list[str]]:
    """(file suffix, bytes, extra overrides): a table that one of many mistakes makes unusable."""
    records = [{"text": t, "label": y} for t, y in draw(rows)]
    mistake = draw(st.sampled_from(["no label column", "no text column", "header only", "one class", "empty text",
                                    "semicolons", "not utf-8", "open quote", "cut json line", "json scalar line",
                                    "text target", "wrong extension", "random bytes", "random text"]))
    if mistake == "no label column":
        return ".csv", _csv([{"text": r["text"], "category": r["label"]} for r in records]), []
    if mistake == "no text column":
        return ".jsonl", _jsonl([{"body": r["text"], "label": r["label"]} for r in records]), []
    if mistake == "header only":
        return ".csv", b"text,label\n", []
    if mistake == "one class":
        one_class = [{**r, "label": "pos"} for r in records]
        return draw(st.sampled_from([(".csv", _csv(one_class), []), (".jsonl", _jsonl(one_class), [])]))
    if mistake == "empty text":
        records[draw(st.integers(0, len(records) - 1))]["text"] = draw(st.sampled_from(["", " ", "\t"]))
        return ".csv", _csv(records), []
    if mistake == "semicolons":
        return ".csv", _csv(records, sep=";"), []
    if mistake == "not utf-8":
        data = _csv(records)
        at = draw(st.integers(0, len(data)))
        return ".csv", data[:at] + draw(st.sampled_from([b"\xff", b"\xe9", b"\xc3(", b"\x80"])) + data[at:], []
    if mistake == "open quote":  # a quote that opens the first text field and never closes
        safe = [{"text": draw(safe_texts), "label": r["label"]} for r in records]
        header, _, body = _csv(safe).partition(b"\n")
        return ".csv", header + b'\n"' + body, []
    if mistake == "cut json line":
        data = _jsonl(records).rstrip(b"\n")
        last = data.rfind(b"\n") + 1
        cut = draw(st.integers(last + 1, len(data) - 1))
        return ".jsonl", data[:cut] + b"\n", []
    if mistake == "json scalar line":
        lines = _jsonl(records).splitlines(keepends=True)
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from([b"1\n", b"[1, 2]\n", b'"text"\n',
                                                                                 b"null\n"])))
        return ".jsonl", b"".join(lines), []
    if mistake == "text target":
        return ".csv", _csv(records), ["task=text-regression"]
    if mistake == "wrong extension":
        return draw(st.sampled_from([".txt", ".xlsx", ""])), _csv(records), []
    if mistake == "random bytes":
        return draw(st.sampled_from([".csv", ".jsonl", ".tsv"])), draw(st.binary(max_size=200)), []
    return draw(st.sampled_from([".csv", ".jsonl", ".json"])), draw(st.text(max_size=200)).encode("utf-8"), []


# Values the config refuses (out of range, wrong type), rendered as YAML the way a user types them.
BAD_VALUES = {
    "optimizer.lr": st.one_of(st.floats(max_value=0, allow_nan=False), st.floats(min_value=10, allow_nan=False)),
    "batch_size": st.one_of(st.integers(max_value=0), st.floats(0.1, 99.9).filter(lambda v: not v.is_integer())),
    "epochs": st.integers(max_value=0),
    "head.dropout": st.floats(min_value=1, allow_infinity=False),
    "data.val_fraction": st.one_of(st.floats(max_value=0, allow_nan=False), st.floats(min_value=1, allow_nan=False)),
    "strategy": st.text(string.ascii_lowercase, min_size=1, max_size=12).filter(
        lambda v: v not in STRATEGIES),  # the config's own list: a new strategy needs no edit here
    "precision": st.sampled_from(["fp8", "half", "float32"]),
    "seed": st.text(string.ascii_letters, min_size=1, max_size=8).filter(
        lambda v: v.lower() not in ("true", "false", "yes", "no", "on", "off", "y", "n")),
    "early_stopping.patience": st.integers(max_value=0),
    "data.max_train_samples": st.integers(max_value=0),
    "checkpoint.keep": st.integers(max_value=0),
}
TOP_LEVEL = set(Config.model_fields)
unknown_keys = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12).filter(lambda k: k not in TOP_LEVEL)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
yaml_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
# Valid settings mixed in, so the mistakes meet many configs.
valid_overrides = st.lists(st.sampled_from(["epochs=2", "strategy=gradual", "strategy=two-stage", "seed=3",
                                            "batch_size=auto", "data.group_by_length=false", "optimizer=sgd",
                                            "scheduler=cosine", "loss.label_smoothing=0.1", "recipe=false"]),
                           max_size=3, unique=True)


def _not_an_empty_document(text: str) -> bool:
    """YAML that reads as nothing ('', '~', '# note', '{}') is a valid, empty config: not a mistake."""
    try:
        return yaml.safe_load(text) not in (None, {})
    except yaml.YAMLError:
        return True


def _render(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


@st.composite
def broken_config(draw) -> tuple[list[str], str | None]:
    """(overrides, YAML file text or None): a config with at least one key or value lobell refuses."""
    overrides = draw(valid_overrides)
    mistake = draw(st.sampled_from(["bad value", "unknown key", "unknown nested key", "yaml file"]))
    if mistake == "bad value":
        key = draw(st.sampled_from(sorted(BAD_VALUES)))
        overrides.append(f"{key}={_render(draw(BAD_VALUES[key]))}")
    elif mistake == "unknown key":
        overrides.append(f"{draw(unknown_keys)}={_render(draw(yaml_values))}")
    elif mistake == "unknown nested key":
        section = draw(st.sampled_from(["data", "optimizer", "scheduler", "strategy", "loss", "early_stopping"]))
        overrides.append(f"{section}.{draw(unknown_keys.filter(lambda k: k != 'name'))}={_render(draw(yaml_values))}")
    else:
        document = draw(st.one_of(
            st.dictionaries(unknown_keys, yaml_values, min_size=1, max_size=3).map(yaml.safe_dump),
            st.lists(yaml_values, min_size=1, max_size=3).map(yaml.safe_dump),
            st.text(max_size=60).filter(_not_an_empty_document)))
        return overrides, document
    return overrides, None


def assert_clean_failure(capsys, args: list[str], run: Path) -> None:
    """Exit 2, exactly one `error:` line (the last), no traceback, and no model/ (whole or partial) in `run`."""
    capsys.readouterr()
    code = main(args)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert code == 2, captured.err
    assert "Traceback" not in captured.err + captured.out, captured.err
    assert len(errors) == 1 and captured.err.strip().splitlines()[-1] == errors[0], captured.err
    assert not (run / "model").exists()
    assert not [p for p in run.glob(".model*")] and not (run / ".lock").exists()


@FUZZ
@given(table=broken_table(), command=st.sampled_from(["validate", "train"]), overrides=valid_overrides)
def test_malformed_data_files_fail_cleanly(table, command, overrides, tiny_bert, capsys):
    suffix, data, extra = table
    with tempfile.TemporaryDirectory() as folder:
        path, run = Path(folder) / f"data{suffix}", Path(folder) / "run"
        path.write_bytes(data)
        args = [command, f"model={tiny_bert}", f"data.train={path}", *overrides, *extra, f"output_dir={run}"]
        assert_clean_failure(capsys, args[:1] + (["--quiet"] if command == "train" else []) + args[1:], run)


@FUZZ
@given(config=broken_config(), command=st.sampled_from(["validate", "train"]))
def test_malformed_configs_fail_cleanly(config, command, tiny_bert, sentiment_files, capsys):
    overrides, document = config
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        items = [f"model={tiny_bert}", f"data.train={sentiment_files['train']}", *overrides, f"output_dir={run}"]
        if document is not None:
            (Path(folder) / "config.yaml").write_text(document, encoding="utf-8")
            items.insert(0, str(Path(folder) / "config.yaml"))
        assert_clean_failure(capsys, [command, *items], run)
