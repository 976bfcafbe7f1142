"""Before the first step, `optimizer.lr: auto` probes the LR and `time_budget` fits the plan to the
time; during the run, the budget says when to stop. The runner calls these few functions.

The main process measures and decides (trial steps inside trial.sandbox: the weights are left
bit-identical); every process receives the same decision, so all of them run the same plan and
stop at the same step (Accelerate's set_trigger/check_trigger).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from accelerate.utils import broadcast_object_list

from lobell.config import Config
from lobell.run_dir import add_json_section, atomic_write_text
from lobell.strategies.plans import Stage
from lobell.tasks import build_loader
from lobell.training import budget as budgets
from lobell.training import lr_probe, trial


@dataclass
class Tuning:
    """What ran before training: the LR probe's result and the budget's clock (either may be None)."""

    budget: budgets.Budget | None = None
    probe: lr_probe.Probe | None = None

    def state_dict(self) -> dict:
        """A checkpoint's `budget`: empty without one."""
        return self.budget.state_dict() if self.budget else {}

    @staticmethod
    def state_of(tuning: Tuning | None) -> dict:
        return tuning.state_dict() if tuning is not None else {}


def tune(run, started_at: float, resumed: dict | None) -> None:
    """`before_training` for a built run (training/build.py's Run): its config, plan, evaluator and
    `tuning` updated in place. `resumed`: the resumed checkpoint's budget state, None when fresh."""
    loaders = {name: build_loader(run.cfg, run.adapter, dataset, train=name == "train")  # not yet prepared
               for name, dataset in run.datasets.items()}
    run.cfg, run.plan, run.tuning = before_training(run.cfg, run.accelerator, run.adapter, loaders, run.prepared,
                                                    run.plan, run.loss_fn, run.reporter, run.run_dir, started_at,
                                                    resumed)
    run.evaluate = timed(run.evaluate, run.tuning)


def before_training(cfg: Config, accelerator, adapter, loaders: dict, prepared: dict, plan: list[Stage], loss_fn,
                    reporter, run_dir: Path, started_at: float, resumed: dict | None
                    ) -> tuple[Config, list[Stage], Tuning]:
    """The LR (`auto` -> a number) and, with `time_budget`, the epochs that fit and the clock.

    `loaders` are the data loaders before Accelerate prepared them (`prepared`); `resumed` is a
    resumed run's saved budget state (None for a fresh run): its plan and spent time carry over.
    """
    if resumed is not None:
        return _resume(cfg, plan, started_at, resumed)
    main, probe = accelerator.is_main_process, None
    if lr_probe.wants_probe(cfg):
        probe = _shared(accelerator, lambda: lr_probe.probe_lr(adapter, plan[0], cfg, loaders["train"], loss_fn,
                                                                accelerator))
        cfg = cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(update={"lr": probe.lr})})
        reporter.log(f"optimizer.lr=auto: {probe.lr:.2e} after a {probe.steps}-step LR probe "
                     f"({probe.rule}: {probe.reason}); the model is restored as it was")
        if main:
            atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())  # a resumed run uses the probed LR
            _add_to_recipe_json(run_dir, "lr_probe", asdict(probe))
    if cfg.time_budget is None:
        return cfg, plan, Tuning(None, probe)
    budget = budgets.Budget(cfg.time_budget, started_at)
    fit, measured = _shared(accelerator, lambda: _measure_and_fit(cfg, accelerator, adapter, loaders, prepared,
                                                                   plan, loss_fn, budget))
    budget.fit, budget.measured, budget.max_steps = fit, measured, fit.max_steps
    budget.step_seconds, budget.eval_seconds = measured["step_seconds"], measured["eval_seconds"]
    budget.final_seconds = measured["final_seconds"]
    reporter.log(f"time_budget {budgets.format_duration(budget.seconds)}: {fit.reason}")
    if main:
        _add_to_recipe_json(run_dir, "budget", budget.summary())
    return _fitted(cfg, plan, fit.epochs), trim_plan(plan, fit.epochs), Tuning(budget, probe)


def _measure_and_fit(cfg, accelerator, adapter, loaders, prepared, plan, loss_fn, budget) -> tuple:
    """Timed trial steps of the heaviest stage (the last: the most groups train) and timed
    evaluation batches; then the epochs that fit in what is left of the budget."""
    steps = trial.time_steps(adapter, plan[-1], cfg, loaders["train"], loss_fn, accelerator)
    per_batch = trial.time_eval_batches(adapter, loaders["validation"], accelerator)
    eval_seconds = per_batch * len(prepared["validation"])
    final = eval_seconds + per_batch * len(prepared.get("test", ())) + budgets.write_seconds(
        sum(p.numel() for p in adapter.model.parameters()))
    budget.final_seconds = final
    steps_per_epoch = -(-len(prepared["train"]) // cfg.grad_accum)
    fit = budgets.fit_epochs(budget.training_seconds(), steps["step_seconds"], steps_per_epoch, eval_seconds,
                             sum(stage.epochs for stage in plan))
    measured = {**steps, "eval_seconds": eval_seconds, "final_seconds": final, "steps_per_epoch": steps_per_epoch,
                "setup_seconds": round(budget.elapsed(), 2)}
    return fit, {k: round(v, 4) if isinstance(v, float) else v for k, v in measured.items()}


def trim_plan(plan: list[Stage], epochs: int) -> list[Stage]:
    """The plan's first `epochs` epochs: later stages dropped, the last one kept shortened. Every
    strategy's stages run in order, so this is the plan the strategy would make for fewer epochs."""
    trimmed, left = [], epochs
    for stage in plan:
        if left <= 0:
            break
        trimmed.append(replace(stage, epochs=min(stage.epochs, left)))
        left -= stage.epochs
    return trimmed


def _fitted(cfg: Config, plan: list[Stage], epochs: int) -> Config:
    """In memory only: config.yaml keeps the epochs asked for; the checkpoint keeps the plan."""
    return cfg if epochs == sum(s.epochs for s in plan) else cfg.model_copy(update={"epochs": epochs})


def _resume(cfg: Config, plan: list[Stage], started_at: float, saved: dict):
    if cfg.time_budget is None or not saved:
        return cfg, plan, Tuning()
    budget = budgets.resumed_budget(cfg.time_budget, started_at, saved)
    epochs = saved.get("epochs") or sum(s.epochs for s in plan)
    return _fitted(cfg, plan, epochs), trim_plan(plan, epochs), Tuning(budget)


def timed(evaluate, tuning: Tuning | None):
    """`evaluate` that tells the budget what each validation pass cost."""
    budget = _budget(tuning)
    if budget is None:
        return evaluate

    def timed_evaluate(*args, **kwargs):
        start = time.time()
        try:
            return evaluate(*args, **kwargs)
        finally:
            budget.eval_taken(time.time() - start)
            budget.epoch_boundary()
    return timed_evaluate


def stop_on_time(accelerator, tuning: Tuning | None, global_step: int) -> bool:
    """After each optimizer step: True on every process once the main one says time is up."""
    budget = _budget(tuning)
    if budget is None:
        return False
    budget.step_taken()
    if accelerator.is_main_process and budget.out_of_time():
        accelerator.set_trigger()
    budget.stopped = accelerator.check_trigger() or budget.steps_done(global_step)
    return budget.stopped


def scheduled_steps(tuning: Tuning | None, steps: int) -> int:
    """A stage's schedule length: cut to the planned steps when not one epoch fits (such a plan has
    one stage of one epoch), so the LR still decays to its end."""
    budget = _budget(tuning)
    return min(steps, budget.max_steps) if budget is not None and budget.max_steps else steps


def stopped(tuning: Tuning | None) -> bool:
    return _budget(tuning) is not None and tuning.budget.stopped


def finish(run_dir: Path, tuning: Tuning | None, main: bool) -> dict:
    """metrics.json's `budget` and `lr_probe` (what ran); recipe.json's `budget` gets the same."""
    if tuning is None:
        return {}
    out = {"lr_probe": asdict(tuning.probe)} if tuning.probe else {}
    if tuning.budget is not None:
        out["budget"] = tuning.budget.summary()
        if main:
            _add_to_recipe_json(run_dir, "budget", out["budget"])
    return out


def _budget(tuning: Tuning | None) -> budgets.Budget | None:
    return tuning.budget if tuning is not None else None


def _shared(accelerator, compute):
    """`compute()` on the main process; its result on every process."""
    box = [compute() if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(box)
    return box[0]


def _add_to_recipe_json(run_dir: Path, key: str, value: dict) -> None:
    """A section of recipe.json next to the recipe's choices (with `recipe: false` there is no
    recipe.json: metrics.json alone holds it)."""
    add_json_section(run_dir / "recipe.json", key, value)
