"""`lobell sweep`'s Optuna study: stored in SWEEP/optuna.db, its sampler and pruner, trials cut short by a kill."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from lobell.errors import LobellError
from lobell.problems.base import is_minimised, monitor_for

STUDY = "lobell-sweep"
# A trial is compared with the median of earlier trials at the same epoch once two trials have
# finished, and never before its second epoch: one epoch says little about a fine-tuning run.
PRUNER = {"n_startup_trials": 2, "n_warmup_steps": 2}
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def open_study(cfg, spaces, base: Path, splits, reporter) -> tuple[optuna.Study, str]:
    """The sweep's study (created, or loaded to continue) and the metric it optimises.

    Raises:
        LobellError: the folder holds a sweep over other keys or values (a continued sweep must be the same).
    """
    from lobell.sweep_space import is_grid, space_json

    monitor = monitor_for(splits.problem, cfg.early_stopping.monitor)
    base.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(base / 'optuna.db').resolve()}"
    existing = optuna.get_all_study_names(storage) if (base / "optuna.db").is_file() else []
    known = len(optuna.load_study(study_name=STUDY, storage=storage).trials) if STUDY in existing else 0
    if is_grid(spaces):
        sampler = optuna.samplers.GridSampler({s.key: s.values for s in spaces}, seed=cfg.seed)
    else:  # seeded by what the study holds: a continued sweep draws new start-up points, not the first ones again
        sampler = optuna.samplers.TPESampler(seed=cfg.seed + known)
    study = optuna.create_study(study_name=STUDY, storage=storage, load_if_exists=True, sampler=sampler,
                                pruner=optuna.pruners.MedianPruner(**PRUNER),
                                direction="minimize" if is_minimised(monitor) else "maximize")
    space, stored = space_json(spaces), study.user_attrs.get("space")
    if stored is None:
        study.set_user_attr("space", space)
        study.set_user_attr("monitor", monitor)
    elif stored != space:
        raise LobellError(f"sweep folder '{base}' holds a sweep over other keys or values; re-run it with the same "
                          f"searched keys to continue it, or set output_dir to a new folder")
    if known:
        reporter.log(f"sweep: continuing {base} ({len([t for t in study.trials if t.state in DONE])} trial(s) done)")
    return study, monitor


def retry_killed(study: optuna.Study, reporter) -> list[int]:
    """Trials a kill or an error cut short (still RUNNING in the store, or FAIL) run again, once each,
    with the same values: marked failed, and their values queued as the next trials."""
    retried = list(study.user_attrs.get("retried", []))
    again = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.FAIL)):
        if trial.number in retried:
            continue
        if trial.state == TrialState.RUNNING:  # its process is gone: one sweep process per folder
            study.tell(trial.number, state=TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            again.append(trial.number)
        retried.append(trial.number)
    study.set_user_attr("retried", retried)
    for number in again:
        reporter.log(f"sweep: trial {number} did not finish; running its values again")
    return again


def run_trials(study: optuna.Study, target: int, objective, after_each) -> None:
    """Trials until `target` have finished (complete or pruned) in all, this run and earlier ones."""
    remaining = target - len(study.get_trials(deepcopy=False, states=DONE))
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, callbacks=[lambda _study, _trial: after_each()])
