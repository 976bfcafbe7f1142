"""Every problem keeps the `Problem` contract; metrics, records and tables say what they should."""

from __future__ import annotations

import numpy as np
import pytest

from lobell.data.multitask import TaskHead, TaskHeads
from lobell.problems import PROBLEMS, Problem, make_problem, monitor_for

LOGITS = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 0.5]], dtype=np.float32)


def _all_problems() -> list[Problem]:
    heads = TaskHeads([TaskHead("topic", "classification", "topic", 1.0, ["a", "b"]),
                       TaskHead("score", "regression", "score", 0.5, None)])
    return [make_problem("classification", ["neg", "pos"]), make_problem("multi-label", ["x", "y"]),
            make_problem("regression", None), make_problem("ctc", ["<pad>", "<unk>", "|", "a", "b"]),
            make_problem("multi-task", heads)]


@pytest.mark.parametrize("problem", _all_problems(), ids=lambda p: p.name)
def test_every_problem_keeps_the_contract(problem):
    assert isinstance(problem, Problem)
    assert problem.default_loss in problem.allowed_losses or problem.name == "multi-task"
    assert problem.num_outputs >= 1
    assert len(problem.dummy_targets(4)) == 4


def test_registry_names_match_the_problems():
    assert {name: cls(None if name == "regression" else ["a"]).name for name, cls in PROBLEMS.items()} == {
        name: name for name in PROBLEMS}


def test_classification_scores_records_and_table():
    problem = make_problem("classification", ["neg", "pos"])
    targets = np.array([0, 1, 1])
    assert problem.metrics(LOGITS, targets)["accuracy"] == pytest.approx(2 / 3)
    records = problem.records(LOGITS, targets)
    assert [r["prediction"] for r in records] == ["neg", "pos", "neg"] and records[2]["target"] == "pos"
    table = problem.table(LOGITS)
    assert list(table["prediction"]) == ["neg", "pos", "neg"]
    assert table["probability"].iloc[0] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_multi_label_thresholds_each_label():
    problem = make_problem("multi-label", ["x", "y"])
    records = problem.records(np.array([[1.0, -1.0]]), np.array([[1.0, 1.0]]))
    assert records[0]["prediction"] == ["x"] and records[0]["target"] == ["x", "y"]
    assert problem.metrics(np.array([[1.0, -1.0]]), np.array([[1.0, 1.0]]))["accuracy"] == 0.0


def test_regression_watches_rmse_and_writes_values():
    problem = make_problem("regression", None)
    assert monitor_for(problem, "accuracy") == "rmse" and monitor_for(problem, "mae") == "mae"
    metrics = problem.metrics(np.array([[1.0], [3.0]]), np.array([1.0, 1.0]))
    assert metrics["rmse"] == pytest.approx(np.sqrt(2.0)) and metrics["mae"] == pytest.approx(1.0)
    assert list(problem.table(np.array([[1.5], [2.5]]))["prediction"]) == [1.5, 2.5]


def test_ctc_watches_word_error_rate():
    problem = make_problem("ctc", ["<pad>", "<unk>", "|", "a"])
    assert monitor_for(problem, "accuracy") == "wer" and problem.target_dtype() is None


def test_multi_task_scores_each_task_and_owns_its_loss():
    problem = _all_problems()[-1]
    logits = np.array([[2.0, 0.0, 1.0], [0.0, 2.0, 3.0]], dtype=np.float32)
    targets = np.array([[0.0, 1.0], [1.0, 2.0]], dtype=np.float32)
    metrics = problem.metrics(logits, targets)
    assert metrics["topic/accuracy"] == 1.0 and metrics["score/mae"] == pytest.approx(0.5)
    assert float(problem.loss()(*map(__import__("torch").from_numpy, (logits, targets)))) > 0
    assert list(problem.table(logits)["topic/prediction"]) == ["a", "b"]


@pytest.mark.parametrize("problem", _all_problems()[:4], ids=lambda p: p.name)
def test_registry_metric_names_are_what_each_problem_returns(problem):
    """config checks early_stopping.monitor against registry.METRICS without importing the problems."""
    from lobell.registry import METRICS

    logits = {"ctc": np.zeros((2, 4, 6), dtype=np.float32), "regression": np.array([[0.5], [1.0]])}.get(
        problem.name, np.array([[1.0, 0.0], [0.0, 1.0]]))
    targets = {"classification": np.array([0, 1]), "multi-label": np.array([[1.0, 0.0], [0.0, 1.0]]),
               "regression": np.array([0.0, 1.0]), "ctc": np.array(["a", "ab"], dtype=object)}[problem.name]
    assert set(problem.metrics(logits, targets)) | {"loss"} == set(METRICS[problem.name])
    assert set(METRICS) == set(PROBLEMS)
