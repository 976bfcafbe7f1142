"""`lobell compare`: every strategy (x seeds) trained on the same data, summarised in comparison.json/.html.

It answers "which strategy for my data" with evidence: final metrics with their spread over seeds,
wall time, and the validation curves overlaid. The data is loaded and split once and handed to
every run, so strategies and seeds differ only in what trains and in training randomness (head
initialisation, dropout, batch order), never in which examples they see.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lobell.config import STRATEGIES, Config, with_overrides
from lobell.console import Reporter
from lobell.errors import LobellError, nearest
from lobell.report import html, plots
from lobell.report.run_files import load_run
from lobell.run_dir import atomic_write_json, atomic_write_text


@dataclass
class Comparison:
    base: Path
    json_path: Path
    html_path: Path
    summary: dict


def compare(cfg: Config, strategies: list[str], seeds: int = 1, quiet: bool = False) -> Comparison:
    """Train `cfg` once per strategy and seed into BASE/<strategy>-seed<seed>, then summarise.

    BASE is `cfg.output_dir`, else runs/compare-<timestamp>. Seeds are cfg.seed .. cfg.seed+seeds-1.
    The summary is rewritten after every run, so an interrupted comparison keeps what it finished.

    Raises:
        LobellError: an unknown or repeated strategy, seeds < 1, or a config that a strategy makes
            invalid (checked for every run before the first one starts).
    """
    from lobell.tasks import load_task_splits, parse_task
    from lobell.training.runner import train

    runs = plan_runs(cfg, strategies, seeds)
    base = Path(runs[0][2].output_dir).parent
    reporter = Reporter(quiet)
    splits = load_task_splits(cfg, *parse_task(cfg.task))
    done: list[dict] = []
    for number, (strategy, seed, run_cfg) in enumerate(runs, start=1):
        reporter.log(f"compare: run {number}/{len(runs)}: strategy {strategy}, seed {seed} -> {run_cfg.output_dir}")
        started = time.perf_counter()
        result = train(run_cfg, quiet=quiet, splits=splits)
        done.append({"strategy": strategy, "seed": seed, "run_dir": result.run_dir,
                     "wall_seconds": time.perf_counter() - started})
        summary = summarise(done, strategies, base, splits)
        json_path, html_path = base / "comparison.json", base / "comparison.html"
        atomic_write_json(json_path, summary)
        atomic_write_text(html_path, render(summary, base))
    return Comparison(base, json_path, html_path, summary)


def plan_runs(cfg: Config, strategies: list[str], seeds: int) -> list[tuple[str, int, Config]]:
    """(strategy, seed, config) for every run, each config validated before anything trains."""
    if not strategies:
        raise LobellError("--strategies is empty: name at least one of " + ", ".join(STRATEGIES))
    for name in strategies:
        if name not in STRATEGIES:
            raise LobellError(f"unknown strategy '{name}'{nearest(name, list(STRATEGIES))}; choose from "
                              f"{', '.join(STRATEGIES)}")
    if len(set(strategies)) != len(strategies):
        raise LobellError(f"--strategies names a strategy twice: {','.join(strategies)}")
    if seeds < 1:
        raise LobellError(f"--seeds {seeds}: at least one run per strategy is needed")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.output_dir) if cfg.output_dir is not None else Path("runs") / f"compare-{stamp}"
    runs = []
    for name in strategies:
        for seed in range(cfg.seed, cfg.seed + seeds):
            settings = {"strategy.name": name, "seed": seed, "output_dir": str(base / f"{name}-seed{seed}")}
            runs.append((name, seed, with_overrides(cfg, settings, source=f"strategy {name}")))
    return runs


def summarise(done: list[dict], strategies: list[str], base: Path, splits) -> dict:
    """Per strategy: each run's final metrics, their mean and sample std over seeds, wall time."""
    first = load_run(done[0]["run_dir"])
    summary = {"base": str(base), "monitor": first.monitor(), "task": first.task, "model": first.base_model,
               "data": {name: len(getattr(splits, name)) for name in ("train", "validation", "test")
                        if getattr(splits, name) is not None},
               "spread": "std is the sample standard deviation over seeds (ddof=1); 0 with one seed",
               "strategies": {}}
    for strategy in strategies:
        mine = [run for run in done if run["strategy"] == strategy]
        if mine:
            summary["strategies"][strategy] = _strategy_summary(mine)
    return summary


def _strategy_summary(runs: list[dict]) -> dict:
    records = []
    for run in runs:
        files = load_run(run["run_dir"])
        records.append({"seed": run["seed"], "run_dir": str(run["run_dir"]), "wall_seconds": run["wall_seconds"],
                        "train_seconds": (files.metrics.get("timing") or {}).get("train_seconds"),
                        "best_epoch": files.metrics.get("best_epoch"), "epochs_trained": files.epochs_trained,
                        "before": files.metrics.get("before") or {}, "validation": files.metrics.get("validation") or {},
                        "test": files.metrics.get("test") or {},
                        "curve": [(row["epoch"], row["validation"]) for row in files.history
                                  if isinstance(row.get("validation"), dict)]})
    out = {"runs": [{k: v for k, v in r.items() if k != "curve"} for r in records],
           "wall_seconds": _spread([r["wall_seconds"] for r in records])}
    for split in ("validation", "test"):
        names = dict.fromkeys(name for r in records for name in r[split])
        out[split] = {name: _spread([r[split][name] for r in records if name in r[split]]) for name in names}
    out["curves"] = [r["curve"] for r in records]
    return out


def _spread(values: list[float]) -> dict:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "values": [float(v) for v in array]}


def render(summary: dict, base: Path) -> str:
    """comparison.html: the table (mean +- std over seeds), then the overlaid validation curves."""
    monitor, strategies = summary["monitor"], summary["strategies"]
    metrics = list(dict.fromkeys(m for s in strategies.values() for m in s.get("validation", {})))
    tests = list(dict.fromkeys(m for s in strategies.values() for m in s.get("test", {})))
    header = ["strategy", "runs", *(f"validation {m}" for m in metrics), *(f"test {m}" for m in tests), "wall time (s)"]
    rows = []
    for name, s in strategies.items():
        cells = [_mean_std(s["validation"].get(m)) for m in metrics] + [_mean_std(s["test"].get(m)) for m in tests]
        links = ", ".join(_link(base, run) for run in s["runs"])
        rows.append([html.escape(name), links, *cells, _mean_std(s["wall_seconds"], digits=1)])
    table = html.table(header, rows, ident="comparison", raw_columns=tuple(range(len(header))))
    parts = [html.paragraph(f"{summary['task']} on {summary['model']}; data: " +
                            ", ".join(f"{k} {v:,}" for k, v in summary["data"].items()) +
                            f". Values are mean +- std over seeds ({summary['spread']}).", css="muted"), table]
    for metric in dict.fromkeys([monitor, "loss"]):
        series = {name: [[(epoch, values[metric]) for epoch, values in curve if metric in values]
                         for curve in s["curves"]] for name, s in strategies.items()}
        png = plots.overlaid_curves(series, metric)
        if png is not None:
            parts.append(html.image(png, f"validation {metric} per epoch"))
    title = f"Strategy comparison: {', '.join(strategies)}"
    return html.page(title, str(summary["base"]), [html.section("Results", *parts, anchor="results")])


def _mean_std(spread: dict | None, digits: int = 4) -> str:
    if not spread:
        return ""
    return f"{spread['mean']:.{digits}f} &plusmn; {spread['std']:.{digits}f}"


def _link(base: Path, run: dict) -> str:
    """The run's seed, linked to its report when it has one (a relative link: the folder can move)."""
    run_dir = Path(run["run_dir"])
    label = f"seed {run['seed']}"
    if (run_dir / "report.html").is_file():
        return f"<a href=\"{html.escape(run_dir.name)}/report.html\">{label}</a>"
    return label


__all__ = ["Comparison", "compare", "plan_runs", "render", "summarise"]
