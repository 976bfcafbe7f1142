"""`lobell sweep`: a hyperparameter search on Optuna, every trial a normal run folder under one sweep folder.

`KEY=v1,v2,...` lists values to try; `KEY=low..high` is a range (log-uniform when both ends are
positive and span 10x or more, integers when both are integers). Every searched key listed: grid
search over all combinations; any range: Optuna's TPE sampler. A trial whose validation metric
trails the median of earlier trials at the same epoch stops early (MedianPruner), keeping its best
weights. The study lives in SWEEP/optuna.db (sqlite): re-running the same command continues, keeping
finished trials and running a trial that a kill cut short again. Head-only trials share one feature
cache (SWEEP/feature-cache), so the frozen backbone runs once for the whole sweep.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path

from lobell.config import Config, load_config, with_overrides
from lobell.console import Reporter
from lobell.errors import LobellError
from lobell.run_dir import atomic_write_json, atomic_write_text
from lobell.sweep_space import Space, combinations, grid_size, is_grid, parse_items, space_json  # noqa: F401 (re-exported)

DEFAULT_TRIALS = 10  # TPE without --trials: enough for TPE to leave its random start-up phase (Optuna: 10)


@dataclass
class SweepResult:
    base: Path
    json_path: Path
    html_path: Path
    summary: dict


def plan_sweep(path: str | None, items: list[str]) -> tuple[Config, list[str], list[Space], Path]:
    """The base config, plain overrides, searched keys and sweep folder; every listed value and both
    ends of every range are checked by the config itself before anything trains."""
    plain, spaces = parse_items(items)
    cfg = load_config(path, plain)
    for space in spaces:
        ends = space.values if space.values is not None else [_number(space, space.low), _number(space, space.high)]
        for value in ends:
            load_config(path, [*plain, f"{space.key}={value}"])
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.output_dir) if cfg.output_dir is not None else Path("runs") / f"sweep-{stamp}"
    return cfg, plain, spaces, base


def _number(space: Space, value: float):
    return int(value) if space.integer else value


def suggest(trial, spaces: list[Space]) -> dict:
    """This trial's value for every searched key (strings for listed values, as typed)."""
    params = {}
    for space in spaces:
        if space.values is not None:
            params[space.key] = trial.suggest_categorical(space.key, space.values)
        elif space.integer:
            params[space.key] = trial.suggest_int(space.key, int(space.low), int(space.high), log=space.log)
        else:
            params[space.key] = trial.suggest_float(space.key, space.low, space.high, log=space.log)
    return params


def sweep(path: str | None, items: list[str], trials: int | None = None, quiet: bool = False) -> SweepResult:
    """Run the sweep `items` describe until `trials` trials have finished (a re-run counts those done).

    Raises:
        LobellError: a bad searched key or value, --trials < 1, or a sweep folder holding another sweep.
    """
    try:
        import optuna
    except ImportError:
        raise LobellError("lobell sweep needs Optuna: pip install 'lobell[sweep]' (or pip install optuna)") from None

    from lobell.sweep_study import open_study, retry_killed, run_trials
    from lobell.tasks import load_task_splits, parse_task
    from lobell.training.checkpoint import RunLock

    cfg, plain, spaces, base = plan_sweep(path, items)
    target = trials if trials is not None else (grid_size(spaces) if is_grid(spaces) else DEFAULT_TRIALS)
    if target < 1:
        raise LobellError(f"--trials {target}: a sweep needs at least one trial")
    if is_grid(spaces):
        target = min(target, grid_size(spaces))
    reporter = Reporter(quiet)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The data is read once and handed to every trial, unless a data key is searched.
    splits = load_task_splits(cfg, *parse_task(cfg.task))
    shared = None if any(space.key.startswith("data.") for space in spaces) else splits
    lock = RunLock(base)  # one sweep process per folder: a second one would run the same trials
    lock.acquire()
    try:
        study, monitor = open_study(cfg, spaces, base, splits, reporter)
        retry_killed(study, reporter)
        trial = Trial(path, plain, spaces, base, monitor, quiet, shared)
        run_trials(study, target, trial, lambda: write_summary(study, spaces, base, monitor))
        summary = write_summary(study, spaces, base, monitor)
    finally:
        lock.release()
    best = summary["best"]
    if best:
        reporter.log(f"sweep: best trial {best['number']} ({monitor} {best['value']:.4f}): "
                     f"{' '.join(best['overrides'])}")
    return SweepResult(base, base / "sweep.json", base / "sweep.html", summary)


@dataclass
class Trial:
    """The objective: one trial is a normal run in SWEEP/trial-NNN, its pruner asked after every epoch."""

    path: str | None
    plain: list[str]
    spaces: list[Space]
    base: Path
    monitor: str
    quiet: bool
    splits: object  # the data every trial reads, or None (each trial reads its own)

    def __call__(self, trial) -> float:
        import optuna

        from lobell.training.runner import train

        params = suggest(trial, self.spaces)
        run_dir = self.base / f"trial-{trial.number:03d}"
        cfg = trial_config(self.path, self.plain, params, self.base, run_dir)
        trial.set_user_attr("run_dir", str(run_dir))
        pruned = []

        def on_epoch(epoch: int, metrics: dict) -> bool:
            trial.report(float(metrics[self.monitor]), epoch)
            if trial.should_prune():
                pruned.append(epoch)
            return bool(pruned)

        started = time.perf_counter()
        result = train(cfg, quiet=self.quiet, splits=self.splits, on_epoch=on_epoch)
        value = float(result.metrics["validation"][self.monitor])
        for key, item in {"wall_seconds": round(time.perf_counter() - started, 3), "value": value,
                          "best_epoch": result.metrics.get("best_epoch"), "pruned_at_epoch": pruned[0] if pruned else None
                          }.items():
            trial.set_user_attr(key, item)
        if pruned:
            raise optuna.TrialPruned(f"{self.monitor} trailed the median of earlier trials at epoch {pruned[0]}")
        return value


def trial_config(path, plain: list[str], params: dict, base: Path, run_dir: Path) -> Config:
    """The trial's config: the sweep's own overrides, then its searched values, then its folder. Head-only
    stages share SWEEP/feature-cache unless the config names a cache folder itself."""
    cfg = load_config(path, [*plain, *(f"{key}={value}" for key, value in params.items())])
    settings = {"output_dir": str(run_dir)}
    if "feature_cache_dir" not in cfg.speed.model_fields_set:
        settings["speed.feature_cache_dir"] = str(base / "feature-cache")
    return with_overrides(cfg, settings, source="sweep")


def write_summary(study, spaces: list[Space], base: Path, monitor: str) -> dict:
    """sweep.json and sweep.html from the study as it stands (rewritten after every trial)."""
    from lobell.sweep_report import render, summarise

    summary = summarise(study, spaces, base, monitor)
    atomic_write_json(base / "sweep.json", summary)
    atomic_write_text(base / "sweep.html", render(summary))
    return summary


__all__ = ["Space", "SweepResult", "combinations", "parse_items", "plan_sweep", "sweep"]
