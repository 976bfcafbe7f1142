"""The problems lobell trains for, by the name a task or a `tasks:` entry gives them.

A new problem is one module with a class that keeps the `Problem` contract (problems/base.py)
plus one line here; see docs/development.md, "How to add a task family".
"""

from __future__ import annotations

from lobell.problems.base import MINIMISED, MULTI_LABEL_THRESHOLD, Problem, is_minimised, monitor_for
from lobell.problems.classification import Classification
from lobell.problems.ctc import CTC
from lobell.problems.detection import Detection
from lobell.problems.generation import CausalLM, Seq2Seq
from lobell.problems.masked_lm import MaskedLM
from lobell.problems.multilabel import MultiLabel
from lobell.problems.regression import Regression

PROBLEMS: dict[str, type] = {
    "classification": Classification,
    "multi-label": MultiLabel,
    "regression": Regression,
    "ctc": CTC,
    "detection": Detection,
    "seq2seq": Seq2Seq,
    "causal-lm": CausalLM,
    "masked-lm": MaskedLM,
}


def make_problem(name: str, labels) -> Problem:
    """The problem `name` over `labels`; a multi-task spec (TaskHeads) makes the multi-task problem
    (the one place a run's kind of labels is told apart)."""
    if getattr(labels, "tasks", None) is not None:  # a multi-task spec (data/multitask.py's TaskHeads)
        from lobell.problems.multitask import MultiTask

        return MultiTask(labels)
    return PROBLEMS[name](labels) if name != "regression" else Regression()


__all__ = ["MINIMISED", "MULTI_LABEL_THRESHOLD", "PROBLEMS", "Problem", "is_minimised", "make_problem", "monitor_for"]
