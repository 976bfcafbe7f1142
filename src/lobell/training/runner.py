"""`train(cfg)`: the whole fine-tuning run, read top to bottom: build, stages, finish.

1. Accelerator, seed, and the run folder (locked: one run per folder); with `pretrain:`, a
   masked-LM run on the training texts first (training/pretrain.py), whose encoder the rest starts from.
2. `build_run` (training/build.py): data, backbone and head, recipe, loaders, loss, freeze plan.
3. `run_stage` for each stage of the plan: set what trains, build optimizer and schedule afresh,
   prepare, then epochs of train / evaluate / decide, with checkpoints.
4. `finish_run`: best weights back, final metrics and predictions, model folder, report.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed

from lobell import tracking
from lobell.config import Config
from lobell.console import Reporter
from lobell.data.splits import Splits
from lobell.evaluate import write_predictions
from lobell.report import write_run_documents
from lobell.run_dir import append_jsonl, atomic_write_dir, atomic_write_json
from lobell.strategies.plans import Stage, apply_stage, param_groups
from lobell.training import autotune
from lobell.training import checkpoint as ckpt
from lobell.training import distill, faults, pretrain, signals
from lobell.training.accelerator import make_accelerator, resolve_precision  # noqa: F401 (re-exported)
from lobell.training.build import Resume, Run, build_run, ddp_handlers, load_resume, run_metrics
from lobell.training.logs import fmt, freeze_report, print_summary, timing_summary
from lobell.training.loop import collect_outputs, train_epoch
from lobell.training.optim import build_optimizer, build_scheduler


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict  # {"before": ..., "validation": ..., "test": ..., "best_epoch": ..., "timing": ...}


Interrupted = signals.Interrupted  # a stop signal (SIGTERM, SIGINT): checkpoint written, exit 143/130


@dataclass
class Progress:
    """What changes as the run goes: the checkpointed state plus the live model and best weights."""

    state: ckpt.TrainState
    best_state: dict | None
    resume: Resume | None  # consumed by the first stage that runs
    model: object
    started: float = field(default_factory=time.perf_counter)
    first_epoch: int = 0  # the epoch the next stage starts after
    cached: object = None  # the last stage's feature cache (head-only stages), or None


def train(cfg: Config, *, quiet: bool = False, splits: Splits | None = None, adapter=None,
          plan: list[Stage] | None = None, resume: bool = False, loss_fn=None,
          started_at: float | None = None, on_epoch=None) -> RunResult:
    """Fine-tune `cfg.model` on `cfg.data` and leave a run folder; see the README for its contents.

    The Python API passes in-memory `splits`, its already-built `adapter` and, after
    `freeze_backbone()`/`freeze_to()`, an explicit single-stage `plan`; the CLI passes none.
    `resume=True` continues the run in `cfg.output_dir` from its newest checkpoint; `loss_fn`
    (logits, targets) -> scalar replaces the configured loss. `started_at` (time.time()) is when
    the command started, where `time_budget` counts from (default: now). `on_epoch(epoch,
    validation metrics) -> bool` is asked after each epoch (main process); True ends the run there
    as early stopping does, best weights kept (`lobell sweep`'s pruner).
    """
    started_at = started_at or time.time()
    run_dir = Path(cfg.resolved_output_dir())
    accelerator = make_accelerator(cfg.precision, **tracking.accelerator_kwargs(cfg.tracking, run_dir),
                                   kwargs_handlers=ddp_handlers(cfg))
    set_seed(cfg.seed)
    reporter = Reporter(quiet, accelerator.is_main_process)
    lock = ckpt.RunLock(run_dir)
    try:  # the lock is released on every way out: success, error, stop signal
        if accelerator.is_main_process:
            lock.acquire()
        # SIGTERM/SIGINT (SIGUSR1 opted in): a checkpoint at the next optimizer step (training/signals.py).
        with signals.StopSignals(cfg.checkpoint.on_sigusr1):
            if cfg.pretrain is not None:  # masked-LM on the training texts: the classifier starts from it
                cfg, splits, adapted = _pretrain(cfg, run_dir, splits, quiet, resume)
            run = build_run(cfg, accelerator, reporter, run_dir, splits=splits, adapter=adapter, plan=plan,
                            resume=resume, loss_fn=loss_fn)
            run.on_epoch = on_epoch
            progress = Progress(*load_resume(run, ckpt.TrainState()), model=run.adapter.model)
            # optimizer.lr: auto -> a short LR probe; time_budget -> the epochs that fit, and a clock.
            autotune.tune(run, started_at, progress.state.budget if run.start is not None else None)
            signals.enter_loop(_resume_command(run_dir, accelerator))  # a stop signal now waits for the next step
            for index, stage in enumerate(run.plan):
                if run_stage(run, index, stage, progress):
                    break
            signals.leave_loop(accelerator)  # the final phase: a stop signal stops at once; resuming redoes it
            result = finish_run(run, progress)
            if cfg.pretrain is not None:
                _record(run, result, "pretrain", adapted)
        if run.teacher is not None and cfg.distill.control and cfg.time_budget is None:
            _distillation_control(run, result, splits, plan, loss_fn)  # did the teacher help?
        return result
    finally:
        try:
            tracking.finish(accelerator)
        finally:
            lock.release()
            if accelerator.is_main_process and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()  # a run refused before writing anything leaves no empty folder behind


def _pretrain(cfg: Config, run_dir: Path, splits, quiet: bool, resume: bool):
    """(cfg with model = the adapted encoder, the classifier's splits, the masked-LM phase's summary)."""
    from lobell.tasks import load_task_splits, parse_task

    splits = splits or load_task_splits(cfg, *parse_task(cfg.task))
    base_model = cfg.model
    if not pretrain.finished(run_dir):  # a resumed run whose masked-LM phase finished goes straight on
        mlm_cfg = pretrain.masked_lm_config(cfg, run_dir)
        train(mlm_cfg, quiet=quiet, splits=pretrain.masked_lm_splits(cfg, splits),
              resume=resume and ckpt.latest_checkpoint(mlm_cfg.output_dir) is not None)
    adapted = pretrain.summary(cfg, run_dir, base_model)
    return cfg.model_copy(update={"model": adapted["model"]}), splits, adapted


def _record(run: Run, result: RunResult, key: str, value: dict) -> None:
    """A phase beside the fine-tuning (pretrain, the distillation control) into metrics.json, and the report
    written again."""
    result.metrics[key] = value
    if run.main:
        atomic_write_json(run.run_dir / "metrics.json", result.metrics)
        write_run_documents(run.run_dir, run.reporter.log)


def _distillation_control(run: Run, result: RunResult, splits, plan, loss_fn) -> None:
    """The same student on the same data and budget without the teacher; the verdict goes in distillation.json
    and the report, and a warning when distillation did not help."""
    control = train(distill.control_config(run.cfg, run.run_dir), quiet=True, splits=splits, plan=plan,
                    loss_fn=loss_fn)
    _record(run, result, "distillation", distill.judge(run.run_dir, run.resolved.monitor, result.metrics,
                                                       control.metrics, run.reporter, run.main))


@dataclass
class _StageRun:
    index: int
    stage: Stage
    model: object
    optimizer: object
    scheduler: object
    train_loss: object
    step_adapter: object
    loaders: dict


def run_stage(run: Run, index: int, stage: Stage, progress: Progress) -> bool:
    """One stage of the freeze plan; True when early stopping ends the run."""
    state, first_epoch = progress.state, progress.first_epoch + 1
    last_epoch = progress.first_epoch + stage.epochs
    progress.first_epoch = last_epoch
    if state.epoch >= last_epoch or run.stopper.should_stop:
        return False
    current = _start_stage(run, index, stage, progress, first_epoch)
    for epoch in range(max(first_epoch, state.epoch + 1), last_epoch + 1):
        if _run_epoch(run, current, progress, epoch):
            break
    return run.stopper.should_stop or autotune.stopped(run.tuning)


def _start_stage(run: Run, index: int, stage: Stage, progress: Progress, first_epoch: int) -> _StageRun:
    """Set what trains, build optimizer and schedule afresh, prepare; the first stage also scores the
    untrained model ("before fine-tuning")."""
    cfg, accelerator, adapter, state = run.cfg, run.accelerator, run.adapter, progress.state
    model = accelerator.unwrap_model(progress.model, keep_fp32_wrapper=False)
    accelerator.free_memory()
    apply_stage(model, adapter.layer_map, stage)
    optimizer = build_optimizer(cfg.optimizer, param_groups(model, adapter.layer_map, stage, cfg.optimizer.lr,
                                                             cfg.optimizer.weight_decay),
                                fused=cfg.speed.fused_optimizer)
    steps_per_epoch = math.ceil(len(run.prepared["train"]) / cfg.grad_accum)
    scheduler = build_scheduler(cfg.scheduler, optimizer, autotune.scheduled_steps(run.tuning, stage.epochs *
                                                                                   steps_per_epoch), steps_per_epoch)
    train_loss = with_l1(run.fit_loss, [p for p in model.parameters() if p.requires_grad], cfg.loss.l1)
    resume = progress.resume
    if resume is not None and state.stage == index:
        optimizer.load_state_dict(resume.optimizer)
        scheduler.load_state_dict(resume.scheduler)
    else:
        state.stage = index
        state.stages_log.append(freeze_report(run.reporter, adapter, stage, index, first_epoch - 1, cfg.optimizer.lr,
                                              cfg.strategy.train_bn))
    model, optimizer = accelerator.prepare(model, optimizer)
    progress.model = model
    progress.cached = cached = run.features.for_stage(stage, model)  # None: the backbone runs at every step
    step_adapter, loaders = (cached.adapter, cached.loaders) if cached else (adapter, run.prepared)
    if state.before is None:
        state.before = run.evaluate(model, loaders["validation"], step_adapter)
        run.reporter.log(f"before fine-tuning: validation {fmt(state.before)}")
        if run.main:
            append_jsonl(run.run_dir / "metrics.jsonl", {"epoch": 0, "validation": state.before})
        tracking.log_epoch(accelerator, {"epoch": 0, "validation": state.before})
    if resume is not None:
        ckpt.set_rng_state(resume.rng[accelerator.process_index])
        progress.resume = None
    return _StageRun(index, stage, model, optimizer, scheduler, train_loss, step_adapter, loaders)


def _run_epoch(run: Run, current: _StageRun, progress: Progress, epoch: int) -> bool:
    """Train one epoch, evaluate, record, checkpoint; True when every rank stops early together."""
    accelerator, state = run.accelerator, progress.state
    stats = _train_one_epoch(run, current, progress, epoch)
    for key in state.timing:  # samples and tokens: this process's share x processes
        scale = accelerator.num_processes if key in ("samples", "tokens") else 1
        state.timing[key] += getattr(stats, key) * scale
    if progress.cached:
        run.features.record_epoch(stats.seconds)
    metrics = run.evaluate(current.model, current.loaders["validation"], current.step_adapter)
    improved = run.stopper.update(metrics, epoch)
    if hasattr(current.scheduler, "epoch_end"):  # plateau: the LR follows the monitored metric
        current.scheduler.epoch_end(run.stopper.sign * metrics[run.resolved.monitor])
    if improved:
        progress.best_state = _cpu_state(accelerator, current.model)
        if run.main:
            ckpt.save_best(run.run_dir, progress.best_state)
    state.epoch, state.step_in_epoch, state.epoch_loss = epoch, 0, [0.0, 0]
    state.stages_log[-1]["last_epoch"] = epoch
    state.stages_log[-1]["ranks_in_sync"] = _ranks_in_sync(accelerator, current.model)
    record = {"epoch": epoch, "stage": current.index, "train_loss": stats.loss, "validation": metrics,
              "lrs": stats.lrs, "seconds": stats.seconds,
              **({"stopped_on_time": True} if autotune.stopped(run.tuning) else {})}
    if run.main:
        append_jsonl(run.run_dir / "metrics.jsonl", record)
    tracking.log_epoch(accelerator, record)
    run.reporter.log(f"epoch {epoch}: train loss {stats.loss:.4f}, validation {fmt(metrics)}"
                     f"{'  (best)' if improved else ''}")
    asked = bool(run.on_epoch and run.main and run.on_epoch(epoch, metrics))
    stop = _stop_together(accelerator, run.stopper.should_stop or asked)
    _save(run, current, progress)
    signals.step_boundary(accelerator, lambda: _save(run, current, progress), f"the end of epoch {epoch}",
                          _resume_command(run.run_dir, accelerator), saved=True)
    if asked:
        run.reporter.log(f"stopped after epoch {epoch} as the caller asked (a sweep's pruner); best was epoch "
                         f"{run.stopper.best_epoch}")
    elif stop:
        run.reporter.log(f"early stopping: {run.resolved.monitor} has not improved for {run.stopper.patience} "
                         f"epoch(s); best was epoch {run.stopper.best_epoch}")
    elif autotune.stopped(run.tuning):
        run.reporter.log(f"time_budget: stopped in epoch {epoch} after {state.global_step} steps, leaving time for "
                         f"the final evaluation; best was epoch {run.stopper.best_epoch}")
    return stop or autotune.stopped(run.tuning)


def _train_one_epoch(run: Run, current: _StageRun, progress: Progress, epoch: int):
    cfg, accelerator, state = run.cfg, run.accelerator, progress.state
    loader = current.loaders["train"]
    if state.step_in_epoch:
        loader = accelerator.skip_first_batches(loader, state.step_in_epoch)
    # The batch order is a function of (seed, epoch) alone. Accelerate's loader sets its
    # sampler's epoch to its own iteration count, which restarts at 0 in a resumed run.
    loader.set_epoch(epoch)
    if hasattr(run.train_sampler, "set_epoch"):
        run.train_sampler.set_epoch(epoch)

    def after_step(step: int) -> bool:
        state.step_in_epoch, state.global_step = step, state.global_step + 1
        saved = bool(cfg.checkpoint.every_steps and state.global_step % cfg.checkpoint.every_steps == 0)
        if saved:
            _save(run, current, progress)
        signals.step_boundary(accelerator, lambda: _save(run, current, progress), f"epoch {epoch}, step {step}",
                              _resume_command(run.run_dir, accelerator), saved=saved)
        return autotune.stop_on_time(accelerator, run.tuning, state.global_step)  # True: the epoch ends here

    try:
        with faults.out_of_memory_as_user_error("batch_size", cfg.batch_size, f"training epoch {epoch}"):
            return train_epoch(accelerator, current.step_adapter, current.model, loader, current.optimizer,
                               current.scheduler, current.train_loss, max_grad_norm=cfg.max_grad_norm,
                               train_bn=cfg.strategy.train_bn, reporter=run.reporter,
                               description=f"epoch {epoch}/{cfg.epochs}", first_step=state.step_in_epoch,
                               grad_accum=cfg.grad_accum, lr_log=state.lr_log, after_step=after_step,
                               carry=state.epoch_loss)
    except KeyboardInterrupt:
        _save(run, current, progress)
        raise Interrupted(f"interrupted at epoch {epoch}, step {state.step_in_epoch}; a checkpoint is in "
                          f"{run.run_dir / ckpt.CHECKPOINTS}; resume with: lobell train --resume {run.run_dir}") from None


def _resume_command(run_dir: Path, accelerator: Accelerator) -> str:
    processes = f" --processes {accelerator.num_processes}" if accelerator.num_processes > 1 else ""
    return f"lobell train --resume {run_dir}{processes}"


def _save(run: Run, current: _StageRun, progress: Progress) -> None:
    progress.state.budget = autotune.Tuning.state_of(run.tuning)
    _save_checkpoint(run.accelerator, run.cfg, run.run_dir, progress.state, run.stopper, current.model,
                     current.optimizer, current.scheduler)


def finish_run(run: Run, progress: Progress) -> RunResult:
    """Best weights back, final metrics and predictions, model folder, timing, report."""
    accelerator, state, cached = run.accelerator, progress.state, progress.cached
    model = accelerator.unwrap_model(progress.model, keep_fp32_wrapper=False)
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    model = accelerator.prepare_model(model, evaluation_mode=True)
    results, outputs = {"before": state.before, "best_epoch": run.stopper.best_epoch}, {}
    # Only the head ever trained (the last stage was cached, so every stage was): the cached
    # validation features still hold, and the best head on them gives the validation predictions.
    final = {"validation": (cached.adapter, cached.loaders["validation"])} if cached else {}
    for name in ("validation", "test"):
        if name in run.prepared:
            step_adapter, loader = final.get(name, (run.adapter, run.prepared[name]))
            logits, targets = collect_outputs(accelerator, step_adapter, model, loader, run.reporter, run.problem)
            results[name] = run_metrics(run.problem, logits, targets, run.loss_fn)
            outputs[name] = (logits, targets)
    results["timing"] = timing_summary(state.timing, time.perf_counter() - progress.started, run.features.summary())
    results.update(autotune.finish(run.run_dir, run.tuning, run.main))  # what the budget bought (also recipe.json)
    if run.teacher is not None:  # student vs teacher: scores, parameters, inference speed -> distillation.json
        distill.compare(run.teacher, run.cfg, accelerator, run.adapter, model, run.prepared["validation"], results,
                        run.run_dir, run.reporter)
    if run.main:
        _write_run_folder(run, accelerator.unwrap_model(model, keep_fp32_wrapper=False), state, results, outputs)
    tracking.log_final(accelerator, results, step=state.epoch)
    accelerator.wait_for_everyone()
    print_summary(run.reporter, results, run.resolved.monitor, results["timing"], run.run_dir)
    return RunResult(run.run_dir, results)


def _write_run_folder(run: Run, model, state: ckpt.TrainState, results: dict, outputs: dict) -> None:
    adapter, run_dir, splits = run.adapter, run.run_dir, run.splits
    adapter.model = model
    adapter.model.to(memory_format=torch.contiguous_format)  # saved as usual, whatever training used
    if run.lora is not None:  # merged into plain weights unless lora.merge: false; lora.json
        run.lora.finish(adapter, run_dir)
    atomic_write_dir(run_dir / "model", lambda d: adapter.save(d, {"task": run.cfg.task, "labels": splits.labels}))
    atomic_write_json(run_dir / "stages.json", state.stages_log)
    atomic_write_json(run_dir / "lrs.json", state.lr_log)
    atomic_write_json(run_dir / "metrics.json", results)
    for name, (logits, targets) in outputs.items():
        write_predictions(run_dir / f"predictions_{name}.jsonl", getattr(splits, name).inputs, logits, targets,
                          run.problem, splits.labels, run.loss_fn)
    write_run_documents(run_dir, run.reporter.log)


def with_l1(loss_fn, params: list, strength: float):
    """The training loss plus `strength` x sum |w| over the trainable parameters (the notes' L1)."""
    if not strength:
        return loss_fn

    def penalised(logits, targets, *index):  # index: a distillation loss's example indices (loop.batch_loss)
        return loss_fn(logits, targets, *index) + strength * sum(p.abs().sum() for p in params)

    penalised.uses_index = getattr(loss_fn, "uses_index", False)
    return penalised


def _save_checkpoint(accelerator, cfg, run_dir, state, stopper, model, optimizer, scheduler) -> None:
    """Every rank contributes its RNG state; the main process writes the folder atomically."""
    model_state = _cpu_state(accelerator, model)
    rng = gather_object([ckpt.rng_state()])
    state.early_stopping = stopper.state_dict()
    if accelerator.is_main_process:
        ckpt.save_checkpoint(run_dir, state, model_state, optimizer, scheduler, rng, cfg.checkpoint.keep)
    accelerator.wait_for_everyone()


def _cpu_state(accelerator: Accelerator, model) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in accelerator.get_state_dict(model).items()}


def _ranks_in_sync(accelerator: Accelerator, model) -> bool:
    """All processes hold the same parameters (a cheap checksum, gathered); a mismatch is a bug."""
    if accelerator.num_processes == 1:
        return True
    with torch.no_grad():
        checksum = torch.stack([sum(p.double().sum() for p in model.parameters())]).to(accelerator.device)
    sums = accelerator.gather(checksum)
    if not torch.allclose(sums, sums[0].expand_as(sums), rtol=1e-9, atol=1e-9):
        raise RuntimeError(f"parameters differ across processes after a step (checksums {sums.tolist()})")
    return True


def _stop_together(accelerator: Accelerator, stop: bool) -> bool:
    """Every rank leaves the loop at the same epoch: the main process decides (set/check_trigger)."""
    if stop and accelerator.is_main_process:
        accelerator.set_trigger()
    return accelerator.check_trigger()
