"""Run-time defaults that depend on more than one key, decided in one place.

The config keeps what the user wrote (run folders save it as given); `resolve()` says what the run
actually uses where a key was left to its default. Nothing else writes `x or default`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lobell.config import Config


@dataclass(frozen=True)
class Resolved:
    monitor: str  # what early stopping watches (and what "best" means)
    eval_batch_size: int  # evaluation needs no gradients: twice the training batch fits


def eval_batch_size(cfg: Config) -> int:
    return cfg.eval_batch_size or 2 * cfg.batch_size


def resolve(cfg: Config, problem) -> Resolved:
    """The run's defaults for `problem` (problems/): e.g. monitor accuracy -> rmse for regression, wer for CTC."""
    from lobell.problems import monitor_for

    return Resolved(monitor=monitor_for(problem, cfg.early_stopping.monitor), eval_batch_size=eval_batch_size(cfg))
