"""`build_run(cfg, ...) -> Run`: everything a run needs before its first step, built once.

Accelerator and seed come from `train()`; here: data, the backbone with its new head, the
recipe's choices, LoRA, datasets and loaders, the feature cache, the loss (and a teacher's), the
freeze plan, early stopping and the evaluator. `lr-find`, `batch_size: auto` and distillation use
the same pieces (`build_data`, `loss_for`), so their setup cannot drift from the run's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lobell import tracking
from lobell.config import Config
from lobell.data.splits import Splits
from lobell.data.text import truncation_notes
from lobell.errors import LobellError
from lobell.resolve import Resolved, resolve
from lobell.run_dir import atomic_write_json, atomic_write_text
from lobell.strategies.lora import apply_lora
from lobell.strategies.plans import Stage, build_plan
from lobell.tasks import build_adapter, build_dataset, build_loader, load_task_splits, modality, parse_task
from lobell.training import checkpoint as ckpt
from lobell.training import distill, faults
from lobell.training.feature_cache import build_feature_cache
from lobell.problems.base import collects_outputs
from lobell.training.loop import EarlyStopping, collect_outputs
from lobell.training.losses import loss_for
from lobell.training.precision_probe import choose_precision
from lobell.training.speed import use_channels_last


@dataclass
class Resume:
    """A checkpoint's state beyond the weights, applied as the run reaches it (replaces positional unpacking)."""

    optimizer: dict
    scheduler: dict
    rng: list  # one RNG state per process


@dataclass
class Run:
    """What `run_stage` and `finish_run` read; built once by `build_run`."""

    cfg: Config
    accelerator: object
    reporter: object
    run_dir: Path
    splits: Splits
    adapter: object
    lora: object  # strategies.lora's handle, or None
    datasets: dict
    prepared: dict  # the accelerator-prepared loaders by split name
    train_sampler: object
    features: object  # training/feature_cache.py
    loss_fn: object
    fit_loss: object  # loss_fn, or with a teacher's soft targets (distillation)
    teacher: object
    plan: list[Stage]
    resolved: Resolved
    stopper: EarlyStopping
    start: ckpt.Resumable | None  # the checkpoint to resume from, read back whole
    tuning: object = None  # training/autotune.py's Tuning: the LR probe and the time budget (set by tune())
    on_epoch: object = None  # train()'s on_epoch(epoch, metrics) -> stop?, or None

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def problem(self):
        return self.splits.problem

    def evaluate(self, model, loader, step_adapter=None) -> dict[str, float]:
        with faults.out_of_memory_as_user_error("eval_batch_size", self.resolved.eval_batch_size, "evaluation"):
            logits, targets = collect_outputs(self.accelerator, step_adapter or self.adapter, model, loader,
                                              self.reporter, self.problem)
        return run_metrics(self.problem, logits, targets, self.loss_fn)


def run_metrics(problem, logits, targets, loss_fn) -> dict[str, float]:
    metrics = problem.metrics(logits, targets)
    if collects_outputs(problem):  # outputs are not logits: no loss outside training mode
        return metrics
    metrics["loss"] = float(loss_fn(torch.from_numpy(logits), torch.from_numpy(targets)))
    return metrics


def build_run(cfg: Config, accelerator, reporter, run_dir: Path, *, splits: Splits | None = None, adapter=None,
              plan: list[Stage] | None = None, resume: bool = False, loss_fn=None) -> Run:
    """Data, model, recipe, loaders, loss and plan for `train()`; checked before any training."""
    start = starting_point(run_dir, resume)
    cfg, splits, adapter, lora = build_model(cfg, accelerator, reporter, run_dir, splits, adapter, plan, start)
    datasets, cfg = build_data(cfg, accelerator, adapter, splits, reporter, run_dir)
    loaders = {name: build_loader(cfg, adapter, ds, train=name == "train") for name, ds in datasets.items()}
    train_sampler = loaders["train"].batch_sampler
    use_channels_last(adapter.model, cfg.speed.channels_last, accelerator.device, reporter.log)
    prepared = dict(zip(loaders, accelerator.prepare(*loaders.values())))
    # Head-only stages train on the frozen backbone's features, computed once (training/feature_cache.py).
    features = build_feature_cache(cfg, adapter, datasets, train_sampler, accelerator, reporter)
    tracking.start(accelerator, cfg.model_dump(mode="json"), run_dir)
    loss_fn = loss_fn or loss_for(cfg.loss, splits.problem, splits.train.targets)
    plan = plan or build_plan(cfg.strategy, adapter.layer_map, cfg.epochs)
    # precision: auto -> timed bf16 and fp32 steps of the heaviest stage (cached per machine and model).
    choose_precision(cfg, accelerator, adapter, build_loader(cfg, adapter, datasets["train"], train=True), loss_fn,
                     plan[-1], reporter, run_dir, resumed=start is not None)  # its own loader: the run's order stays
    # distill: the teacher runs once over the data; training adds its soft targets (validation stays hard-label).
    teacher = distill.prepare_teacher(cfg, splits, accelerator, reporter) if cfg.distill else None
    fit_loss = distill.distillation_loss(cfg.distill, loss_fn, teacher, splits.problem.name) if teacher else loss_fn
    resolved = resolve(cfg, splits.problem)
    stopper = EarlyStopping(resolved.monitor, cfg.early_stopping.patience, cfg.early_stopping.min_delta)
    return Run(cfg, accelerator, reporter, run_dir, splits, adapter, lora, datasets, prepared, train_sampler,
               features, loss_fn, fit_loss, teacher, plan, resolved, stopper, start)


def build_model(cfg: Config, accelerator, reporter, run_dir: Path, splits, adapter, plan, start):
    """Splits, then the backbone with its new head and own preprocessing, the recipe, and LoRA."""
    splits = splits or load_task_splits(cfg, *parse_task(cfg.task))
    for note in splits.notes:
        reporter.log(note)
    adapter = adapter or build_adapter(cfg, parse_task(cfg.task)[0], splits.problem.name, splits.labels)
    if start is None:
        cfg = apply_recipe(cfg, splits, adapter, reporter, run_dir, accelerator.is_main_process,
                           explicit_plan=plan is not None)
    # strategy=lora: peft adapters on the linear layers; the layer map becomes frozen weights, adapters, head.
    if cfg.strategy.name == "lora" and (plan is not None or _is_peft(adapter.model)):
        raise LobellError("strategy=lora wraps the model in LoRA adapters itself: drop the freeze_backbone()/"
                          "freeze_to() call, and start from a fresh model rather than one already trained with LoRA")
    lora = apply_lora(adapter, cfg.lora, cfg.optimizer.name, reporter.log) if cfg.strategy.name == "lora" else None
    reporter.log(f"model {cfg.model}: {len(adapter.layer_map)} layer groups ({adapter.layer_map.source}); "
                 f"precision {accelerator.mixed_precision}, {accelerator.num_processes} process(es) on "
                 f"{accelerator.device}")
    return cfg, splits, adapter, lora


def build_data(cfg: Config, accelerator, adapter, splits: Splits, reporter, run_dir: Path) -> tuple[dict, Config]:
    """The splits as the model reads them, and `batch_size: auto` replaced by a size that fits."""
    datasets = {name: build_dataset(cfg, adapter, getattr(splits, name), reporter=reporter)
                for name in ("train", "validation", "test") if getattr(splits, name) is not None}
    for note in truncation_notes(datasets):
        reporter.log(note)
    if cfg.batch_size == "auto":
        cfg = auto_batch(cfg, accelerator, adapter, datasets, splits, reporter, run_dir)
    return datasets, cfg


def load_resume(run: Run, state: ckpt.TrainState) -> tuple[ckpt.TrainState, dict | None, Resume | None]:
    """(state, best weights, what the first resumed stage restores) from the run's checkpoint, if any."""
    if run.start is None:
        return state, None, None
    state, weights, optimizer, scheduler, rng = run.start.loaded  # the newest checkpoint that reads back
    for note in run.start.notes:  # shown even with --quiet: the run repeats some steps
        run.reporter.warn(note)
    run.adapter.model.load_state_dict(weights)
    best_state = ckpt.load_best(run.run_dir)
    run.stopper.load_state_dict(state.early_stopping)
    if run.main:
        trim_metrics(run.run_dir, state.epoch)
    run.reporter.log(f"resuming {run.run_dir} from {run.start.folder.name}: epoch {state.epoch + 1}, step "
                     f"{state.step_in_epoch}")
    return state, best_state, Resume(optimizer, scheduler, rng)


def _is_peft(model) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def auto_batch(cfg: Config, accelerator, adapter, datasets, splits, reporter, run_dir: Path) -> Config:
    """Replace `batch_size: auto` by the largest size that fits, keeping the recipe's effective batch."""
    from lobell import recipe
    from lobell.training.batch_finder import find_batch_size, worst_case_batch

    target = recipe.decide_batch(recipe.profile_of(cfg, splits, adapter))
    collate = build_loader(cfg.model_copy(update={"batch_size": 1}), adapter, datasets["train"], train=False).collate_fn
    model = adapter.model.to(accelerator.device)
    loss_fn = loss_for(cfg.loss, splits.problem, splits.train.targets)

    def fits(size: int) -> None:
        batch = {k: v.to(accelerator.device) for k, v in worst_case_batch(datasets["train"], size, collate).items()}
        model.train()
        with accelerator.autocast():
            loss_fn(adapter.forward(model, batch), batch["targets"]).backward()
        model.zero_grad(set_to_none=True)
        with torch.inference_mode(), accelerator.autocast():
            adapter.forward(model.eval(), {k: torch.cat([v, v]) for k, v in batch.items()})

    size, accum = find_batch_size(fits, target)
    reporter.log(f"batch_size=auto: {size} fits (target {target}); grad_accum={accum} keeps an effective batch "
                 f"of {size * accum}")
    cfg = cfg.model_copy(update={"batch_size": size, "grad_accum": accum})
    if accelerator.is_main_process:
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    return cfg


def apply_recipe(cfg: Config, splits, adapter, reporter, run_dir: Path, main: bool, explicit_plan: bool) -> Config:
    """Fill the keys the user left unset from the recipe, say why, and record the resolved config."""
    from lobell import recipe

    if cfg.recipe:
        profile = recipe.profile_of(cfg, splits, adapter, probe=True)
        choices = recipe.decide(cfg, profile)
        cfg = recipe.apply(cfg, choices)
        reporter.log("recipe (lobell recipe shows it without training):\n" + recipe.describe(choices, profile))
        if explicit_plan:
            reporter.log("the strategy is the one your freeze_backbone()/freeze_to() call set")
        if main:
            atomic_write_json(run_dir / "recipe.json", recipe.as_json(choices, profile))
    if main:
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        (run_dir / "metrics.jsonl").write_text("")
    return cfg


def ddp_handlers(cfg: Config) -> list:
    """Audio encoders skip parameters in some steps (modalities/audio.py): DDP must then look for
    unused parameters each step (as the HF Trainer does), or it stops with "Expected to have finished
    reduction". Text and image models use every trainable parameter every step: no extra cost."""
    if not modality(parse_task(cfg.task)[0]).find_unused_parameters:
        return []
    from accelerate.utils import DistributedDataParallelKwargs

    return [DistributedDataParallelKwargs(find_unused_parameters=True)]


def starting_point(run_dir: Path, resume: bool) -> ckpt.Resumable | None:
    """The checkpoint to resume from, or None for a fresh run (refused where a run already is)."""
    latest = ckpt.latest_checkpoint(run_dir)
    if resume:
        if latest is None:
            raise LobellError(f"run folder '{run_dir}' has no checkpoint to resume from")
        return ckpt.newest_readable(run_dir)  # a damaged newest checkpoint falls back to the one before
    if latest is not None or (run_dir / "model").exists():
        raise LobellError(f"run folder '{run_dir}' already holds a run; resume it with `lobell train --resume "
                          f"{run_dir}`, or set output_dir to a new folder")
    return None


def trim_metrics(run_dir: Path, epoch: int) -> None:
    """Drop lines a killed run wrote after its last checkpoint (they will be written again)."""
    path = run_dir / "metrics.jsonl"
    lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["epoch"] <= epoch]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
