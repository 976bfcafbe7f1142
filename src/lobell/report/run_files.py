"""A finished run folder read tolerantly: each file optional, every problem noted rather than raised."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lobell.errors import LobellError
from lobell.registry import TASKS


@dataclass
class RunFiles:
    """What a run left behind; an absent or unreadable file is empty here and named in `problems`."""

    run_dir: Path
    config: dict = field(default_factory=dict)  # config.yaml as written (raw, not re-validated)
    history: list[dict] = field(default_factory=list)  # metrics.jsonl: epoch 0 is before fine-tuning
    metrics: dict = field(default_factory=dict)  # metrics.json
    stages: list[dict] = field(default_factory=list)  # stages.json
    lrs: list[dict] = field(default_factory=list)  # lrs.json: {"step", <group>: lr, ...} per step
    predictions: list[dict] = field(default_factory=list)  # predictions_validation.jsonl
    test_predictions: list[dict] = field(default_factory=list)
    model_info: dict = field(default_factory=dict)  # model/lobell.json
    recipe: Any = None  # recipe.json, when the recipe step wrote one
    problems: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return str(self.model_info.get("task") or self.config.get("task") or "text-classification")

    @property
    def modality(self) -> str:
        return str(self.model_info.get("modality") or self.task.partition("-")[0])

    @property
    def problem(self) -> str:
        """The registry's problem name (classification, multi-label, regression, ctc)."""
        return TASKS.get(self.task, (None, "classification"))[1]

    @property
    def labels(self) -> list[str]:
        """Label names in the model's output order; else those seen in the predictions, sorted."""
        if self.model_info.get("labels"):
            return [str(label) for label in self.model_info["labels"]]
        seen: set[str] = set()
        for row in self.predictions:
            for key in ("target", "prediction"):
                value = row.get(key)
                seen.update(map(str, value) if isinstance(value, list) else [] if value is None else [str(value)])
        return sorted(seen)

    @property
    def base_model(self) -> str:
        return str(self.model_info.get("base_model") or self.config.get("model") or "unknown")

    @property
    def epochs_trained(self) -> int:
        return max((int(row.get("epoch", 0)) for row in self.history), default=0)

    def monitor(self) -> str:
        """The metric early stopping watched, when the run computed it; else the task's headline."""
        validation = self.metrics.get("validation") or {}
        configured = (self.config.get("early_stopping") or {}).get("monitor")
        if configured in validation:
            return configured
        fallback = "rmse" if self.problem == "regression" else "accuracy"
        return fallback if fallback in validation or not validation else next(iter(validation))


def load_run(run_dir: str | Path) -> RunFiles:
    """Read every file the report uses; only a missing run folder is an error.

    Raises:
        LobellError: `run_dir` is not a folder.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LobellError(f"run folder '{run_dir}' does not exist")
    run = RunFiles(run_dir)
    read = _Reader(run_dir, run.problems)
    run.config = read("config.yaml", lambda text: yaml.safe_load(text) or {}, {})
    run.history = read("metrics.jsonl", _jsonl(run.problems, "metrics.jsonl"), [])
    run.metrics = read("metrics.json", json.loads, {})
    run.stages = read("stages.json", json.loads, [])
    run.lrs = read("lrs.json", json.loads, [])
    run.predictions = read("predictions_validation.jsonl", _jsonl(run.problems, "predictions_validation.jsonl"), [])
    run.test_predictions = read("predictions_test.jsonl", _jsonl(run.problems, "predictions_test.jsonl"), [],
                                optional=True)
    run.model_info = read("model/lobell.json", json.loads, {})
    run.recipe = read("recipe.json", json.loads, None, optional=True)
    return run


class _Reader:
    """Reads one file with a parser; records what was missing or broken instead of raising."""

    def __init__(self, run_dir: Path, problems: list[str]):
        self.run_dir, self.problems = run_dir, problems

    def __call__(self, name: str, parse: Callable[[str], Any], default: Any, optional: bool = False) -> Any:
        path = self.run_dir / name
        if not path.is_file():
            if not optional:
                self.problems.append(f"{name} is missing")
            return default
        try:
            value = parse(path.read_text(encoding="utf-8"))
        except (ValueError, yaml.YAMLError, UnicodeDecodeError) as exc:
            self.problems.append(f"{name} could not be read: {str(exc).splitlines()[0] if str(exc) else exc!r}")
            return default
        if default is not None and not isinstance(value, type(default)):
            self.problems.append(f"{name} holds a {type(value).__name__}, not a {type(default).__name__}")
            return default
        return value


def _jsonl(problems: list[str], name: str) -> Callable[[str], list[dict]]:
    """A JSON-lines parser that skips (and notes) broken lines, e.g. a line cut short by a crash."""

    def parse(text: str) -> list[dict]:
        rows, bad = [], 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
        if bad:
            problems.append(f"{name}: {bad} unreadable line(s) skipped")
        return rows

    return parse
