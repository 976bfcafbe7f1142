"""sweep.json and sweep.html: every trial (values, result, state, time, run folder) and the best config."""

from __future__ import annotations

from pathlib import Path

from lobell.report import html


def summarise(study, spaces, base: Path, monitor: str) -> dict:
    from optuna.trial import TrialState

    from lobell.sweep_space import is_grid

    trials = [_trial(t) for t in study.get_trials(deepcopy=False)]
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    best = None
    if complete:
        chosen = study.best_trial
        best = {"number": chosen.number, "value": chosen.value, "params": chosen.params,
                "run_dir": chosen.user_attrs.get("run_dir"),
                "overrides": [f"{key}={value}" for key, value in chosen.params.items()]}
    finished = [t for t in trials if t["wall_seconds"] is not None]
    cost = None
    if finished:
        total = sum(t["wall_seconds"] for t in finished)
        cost = {"trials": len(finished), "first_trial_seconds": finished[0]["wall_seconds"], "total_seconds": total,
                "total_over_first": total / finished[0]["wall_seconds"]}
    return {"base": str(base), "monitor": monitor, "direction": study.direction.name.lower(),
            "mode": "grid" if is_grid(spaces) else "tpe", "space": [s.describe() for s in spaces],
            "trials": trials, "best": best, "cost": cost}


def _trial(t) -> dict:
    attrs = t.user_attrs
    return {"number": t.number, "state": t.state.name.lower(), "params": t.params,
            "value": t.value if t.value is not None else attrs.get("value"), "best_epoch": attrs.get("best_epoch"),
            "pruned_at_epoch": attrs.get("pruned_at_epoch"), "retry_of": attrs.get("retry_of"),
            "wall_seconds": attrs.get("wall_seconds"), "run_dir": attrs.get("run_dir")}


def render(summary: dict) -> str:
    """The best config first (the overrides to train it again), then every trial with a link to its report."""
    keys = list(dict.fromkeys(k for t in summary["trials"] for k in t["params"]))
    header = ["trial", *keys, f"validation {summary['monitor']}", "state", "best epoch", "wall time (s)"]
    best_number = summary["best"]["number"] if summary["best"] else None
    rows = []
    for t in summary["trials"]:
        label = html.escape(f"{t['number']}" + (" (best)" if t["number"] == best_number else ""))
        if t["run_dir"] and (Path(t["run_dir"]) / "report.html").is_file():
            label = f"<a href=\"{html.escape(Path(t['run_dir']).name)}/report.html\">{label}</a>"
        state = t["state"] + (f" at epoch {t['pruned_at_epoch']}" if t["pruned_at_epoch"] else "") + (
            f" (retry of {t['retry_of']})" if t["retry_of"] is not None else "")
        rows.append([label, *(t["params"].get(k) for k in keys), t["value"], state, t["best_epoch"],
                     t["wall_seconds"]])
    parts = [html.paragraph(f"{summary['mode']} search over " + "; ".join(summary["space"]) +
                            f"; {summary['direction']} validation {summary['monitor']}.", css="muted")]
    best = summary["best"]
    parts.append(html.paragraph(
        f"Best: trial {best['number']}, validation {summary['monitor']} {best['value']:.4f}, with "
        f"{' '.join(best['overrides'])} (its folder: {best['run_dir']})." if best else "No trial has finished yet."))
    cost = summary["cost"]
    if cost:
        parts.append(html.paragraph(f"{cost['trials']} trial(s) took {cost['total_seconds']:.1f} s in all, "
                                    f"{cost['total_over_first']:.2f}x the first trial's {cost['first_trial_seconds']:.1f} s "
                                    "(later head-only trials read the shared feature cache).", css="muted"))
    table = html.table(header, rows, ident="trials", raw_columns=(0,))
    return html.page(f"Sweep: {', '.join(keys)}", summary["base"],
                     [html.section("Best config", *parts, anchor="best"), html.section("Trials", table, anchor="trials")])
