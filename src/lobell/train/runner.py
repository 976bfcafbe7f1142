"""`train(cfg)`: the whole fine-tuning run, read top to bottom as a numbered story."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object, set_seed

from lobell import tracking
from lobell.config import Config
from lobell.console import Reporter
from lobell.data.splits import Splits
from lobell.data.text import truncation_notes
from lobell.errors import LobellError
from lobell.evaluate import compute_metrics, write_predictions
from lobell.models import multitask
from lobell.report import write_run_documents
from lobell.run_dir import append_jsonl, atomic_write_dir, atomic_write_json, atomic_write_text
from lobell.strategies.lora import apply_lora
from lobell.strategies.plans import Stage, apply_stage, build_plan, param_groups
from lobell.tasks import build_adapter, build_dataset, build_loader, load_task_splits, num_outputs, parse_task
from lobell.train import checkpoint as ckpt
from lobell.train import distill
from lobell.train import faults
from lobell.train.feature_cache import build_feature_cache
from lobell.train.logs import fmt, freeze_report, print_summary, timing_summary
from lobell.train.losses import build_loss
from lobell.train.loop import EarlyStopping, predict_logits, train_epoch
from lobell.train.optim import build_optimizer, build_scheduler
from lobell.train.speed import use_channels_last


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict  # {"before": ..., "validation": ..., "test": ..., "best_epoch": ..., "timing": ...}


class Interrupted(LobellError):
    """Ctrl-C: a checkpoint was written; the message says how to resume."""

    exit_code = 130


def train(cfg: Config, *, quiet: bool = False, splits: Splits | None = None, adapter=None,
          plan: list[Stage] | None = None, resume: bool = False, loss_fn=None) -> RunResult:
    """Fine-tune `cfg.model` on `cfg.data` and leave a run folder; see the README for its contents.

    The Python API passes in-memory `splits`, its already-built `adapter` and, after
    `freeze_backbone()`/`freeze_to()`, an explicit single-stage `plan`; the CLI passes none.
    `resume=True` continues the run in `cfg.output_dir` from its newest checkpoint; `loss_fn`
    (logits, targets) -> scalar replaces the configured loss.
    """
    # 1. Accelerator, seed, and the run folder (locked: one run per folder).
    run_dir = Path(cfg.resolved_output_dir())
    accelerator = make_accelerator(cfg.precision, **tracking.accelerator_kwargs(cfg.tracking, run_dir),
                                   kwargs_handlers=_ddp_handlers(cfg))
    set_seed(cfg.seed)
    reporter = Reporter(quiet, accelerator.is_main_process)
    lock = ckpt.RunLock(run_dir)
    if accelerator.is_main_process:
        lock.acquire()
    try:
        return _run(cfg, accelerator, reporter, run_dir, splits, adapter, plan, resume, loss_fn)
    finally:
        tracking.finish(accelerator)
        lock.release()
        if accelerator.is_main_process and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a run refused before writing anything leaves no empty folder behind


def _run(cfg, accelerator, reporter, run_dir, splits, adapter, plan, resume, custom_loss) -> RunResult:
    main = accelerator.is_main_process
    start = _starting_point(run_dir, resume)

    # 2. Data, then the backbone with its new head and its own preprocessing.
    modality, problem = parse_task(cfg.task)
    splits = splits or load_task_splits(cfg, modality, problem)
    for note in splits.notes:
        reporter.log(note)
    adapter = adapter or build_adapter(cfg, modality, problem, splits.labels)
    if start is None:
        cfg = _apply_recipe(cfg, splits, adapter, reporter, run_dir, main, explicit_plan=plan is not None)
    # strategy=lora: peft adapters on the linear layers; the layer map becomes frozen weights, adapters, head.
    if cfg.strategy.name == "lora" and (plan is not None or _is_peft(adapter.model)):
        raise LobellError("strategy=lora wraps the model in LoRA adapters itself: drop the freeze_backbone()/"
                          "freeze_to() call, and start from a fresh model rather than one already trained with LoRA")
    lora = apply_lora(adapter, cfg.lora, cfg.optimizer.name, reporter.log) if cfg.strategy.name == "lora" else None
    reporter.log(f"model {cfg.model}: {len(adapter.layer_map)} layer groups ({adapter.layer_map.source}); "
                 f"precision {accelerator.mixed_precision}, {accelerator.num_processes} process(es) on {accelerator.device}")
    datasets = {name: build_dataset(cfg, adapter, getattr(splits, name), reporter=reporter)
                for name in ("train", "validation", "test") if getattr(splits, name) is not None}
    for note in truncation_notes(datasets):
        reporter.log(note)
    if cfg.batch_size == "auto":
        cfg = _auto_batch(cfg, accelerator, adapter, datasets, problem, splits, reporter, run_dir)
    loaders = {name: build_loader(cfg, adapter, ds, train=name == "train") for name, ds in datasets.items()}
    train_sampler = loaders["train"].batch_sampler
    use_channels_last(adapter.model, cfg.speed.channels_last, accelerator.device, reporter.log)
    prepared = dict(zip(loaders, accelerator.prepare(*loaders.values())))
    # Head-only stages train on the frozen backbone's features, computed once (train/feature_cache.py).
    features = build_feature_cache(cfg, adapter, datasets, train_sampler, accelerator, reporter)
    tracking.start(accelerator, cfg.model_dump(mode="json"), run_dir)

    # 3. Loss, freeze plan (checked before any training), early stopping, and where we resume.
    loss_fn = custom_loss or multitask.loss_for(splits.labels) or build_loss(cfg.loss, problem, splits.train.targets,
                                                                             num_outputs(problem, splits.labels))
    # distill: the teacher runs once over the data; training adds its soft targets (validation stays hard-label).
    teacher = distill.prepare_teacher(cfg, splits, accelerator, reporter) if cfg.distill else None
    fit_loss = distill.distillation_loss(cfg.distill, loss_fn, teacher, problem) if teacher else loss_fn
    plan = plan or build_plan(cfg.strategy, adapter.layer_map, cfg.epochs)
    monitor = _monitor(cfg, problem)
    stopper = EarlyStopping(monitor, cfg.early_stopping.patience, cfg.early_stopping.min_delta)
    state, best_state, resumed = ckpt.TrainState(), None, None
    if start is not None:
        state, weights, *resumed = ckpt.load_checkpoint(start)
        adapter.model.load_state_dict(weights)
        best_state = ckpt.load_best(run_dir)
        stopper.load_state_dict(state.early_stopping)
        if main:
            _trim_metrics(run_dir, state.epoch)
        reporter.log(f"resuming {run_dir} from {start.name}: epoch {state.epoch + 1}, step {state.step_in_epoch}")
    evaluate = _evaluator(accelerator, adapter, problem, loss_fn, reporter, splits.labels,
                          cfg.eval_batch_size or 2 * cfg.batch_size)

    # 4. Stages: set what trains, build optimizer and schedule afresh, prepare, then epochs.
    model, first_epoch, started = adapter.model, 0, time.perf_counter()
    cached = None
    for index, stage in enumerate(plan):
        first_epoch, last_epoch = first_epoch + 1, first_epoch + stage.epochs
        if state.epoch >= last_epoch or stopper.should_stop:
            first_epoch = last_epoch
            continue
        model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        accelerator.free_memory()
        apply_stage(model, adapter.layer_map, stage)
        optimizer = build_optimizer(cfg.optimizer, param_groups(model, adapter.layer_map, stage, cfg.optimizer.lr,
                                                                 cfg.optimizer.weight_decay),
                                    fused=cfg.speed.fused_optimizer)
        steps_per_epoch = math.ceil(len(prepared["train"]) / cfg.grad_accum)
        scheduler = build_scheduler(cfg.scheduler, optimizer, stage.epochs * steps_per_epoch, steps_per_epoch)
        train_loss = with_l1(fit_loss, [p for p in model.parameters() if p.requires_grad], cfg.loss.l1)
        if resumed is not None and state.stage == index:
            optimizer.load_state_dict(resumed[0])
            scheduler.load_state_dict(resumed[1])
        else:
            state.stage = index
            state.stages_log.append(freeze_report(reporter, adapter, stage, index, first_epoch - 1, cfg.optimizer.lr,
                                                  cfg.strategy.train_bn))
        model, optimizer = accelerator.prepare(model, optimizer)
        cached = features.for_stage(stage, model)  # None: the backbone runs at every step
        step_adapter, stage_loaders = (cached.adapter, cached.loaders) if cached else (adapter, prepared)
        if state.before is None:
            state.before = evaluate(model, stage_loaders["validation"], step_adapter)
            reporter.log(f"before fine-tuning: validation {fmt(state.before)}")
            if main:
                append_jsonl(run_dir / "metrics.jsonl", {"epoch": 0, "validation": state.before})
            tracking.log_epoch(accelerator, {"epoch": 0, "validation": state.before})
        if resumed is not None:
            ckpt.set_rng_state(resumed[2][accelerator.process_index])
            resumed = None

        def save(model=model, optimizer=optimizer, scheduler=scheduler) -> None:
            _save_checkpoint(accelerator, cfg, run_dir, state, stopper, model, optimizer, scheduler)

        for epoch in range(max(first_epoch, state.epoch + 1), last_epoch + 1):
            loader = stage_loaders["train"]
            if state.step_in_epoch:
                loader = accelerator.skip_first_batches(loader, state.step_in_epoch)
            # The batch order is a function of (seed, epoch) alone. Accelerate's loader sets its
            # sampler's epoch to its own iteration count, which restarts at 0 in a resumed run.
            loader.set_epoch(epoch)
            if hasattr(train_sampler, "set_epoch"):
                train_sampler.set_epoch(epoch)

            def after_step(step: int) -> None:
                state.step_in_epoch, state.global_step = step, state.global_step + 1
                if cfg.checkpoint.every_steps and state.global_step % cfg.checkpoint.every_steps == 0:
                    save()

            try:
                with faults.out_of_memory_as_user_error("batch_size", cfg.batch_size, f"training epoch {epoch}"):
                    stats = train_epoch(accelerator, step_adapter, model, loader, optimizer, scheduler, train_loss,
                                        max_grad_norm=cfg.max_grad_norm, train_bn=cfg.strategy.train_bn,
                                        reporter=reporter, description=f"epoch {epoch}/{cfg.epochs}",
                                        first_step=state.step_in_epoch, grad_accum=cfg.grad_accum,
                                        lr_log=state.lr_log, after_step=after_step)
            except KeyboardInterrupt:
                save()
                raise Interrupted(f"interrupted at epoch {epoch}, step {state.step_in_epoch}; a checkpoint is in "
                                  f"{run_dir / ckpt.CHECKPOINTS}; resume with: lobell train --resume {run_dir}") from None
            for key in state.timing:  # samples and tokens: this process's share x processes
                scale = accelerator.num_processes if key in ("samples", "tokens") else 1
                state.timing[key] += getattr(stats, key) * scale
            if cached:
                features.record_epoch(stats.seconds)
            metrics = evaluate(model, stage_loaders["validation"], step_adapter)
            improved = stopper.update(metrics, epoch)
            if hasattr(scheduler, "epoch_end"):  # plateau: the LR follows the monitored metric
                scheduler.epoch_end(stopper.sign * metrics[monitor])
            if improved:
                best_state = _cpu_state(accelerator, model)
                if main:
                    ckpt.save_best(run_dir, best_state)
            state.epoch, state.step_in_epoch = epoch, 0
            state.stages_log[-1]["last_epoch"] = epoch
            state.stages_log[-1]["ranks_in_sync"] = _ranks_in_sync(accelerator, model)
            record = {"epoch": epoch, "stage": index, "train_loss": stats.loss, "validation": metrics,
                      "lrs": stats.lrs, "seconds": stats.seconds}
            if main:
                append_jsonl(run_dir / "metrics.jsonl", record)
            tracking.log_epoch(accelerator, record)
            reporter.log(f"epoch {epoch}: train loss {stats.loss:.4f}, validation {fmt(metrics)}"
                         f"{'  (best)' if improved else ''}")
            stop = _stop_together(accelerator, stopper.should_stop)
            save()
            if stop:
                reporter.log(f"early stopping: {monitor} has not improved for {stopper.patience} epoch(s); "
                             f"best was epoch {stopper.best_epoch}")
                break
        first_epoch = last_epoch
        if stopper.should_stop:
            break

    # 5. Best weights back, final metrics and predictions, model folder, timing.
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    if best_state is not None:
        model.load_state_dict(best_state)
    model = accelerator.prepare_model(model, evaluation_mode=True)
    results, outputs = {"before": state.before, "best_epoch": stopper.best_epoch}, {}
    # Only the head ever trained (the last stage was cached, so every stage was): the cached
    # validation features still hold, and the best head on them gives the validation predictions.
    final = {"validation": (cached.adapter, cached.loaders["validation"])} if cached else {}
    for name in ("validation", "test"):
        if name in prepared:
            step_adapter, loader = final.get(name, (adapter, prepared[name]))
            logits, targets, _ = predict_logits(accelerator, step_adapter, model, loader, reporter)
            results[name] = _metrics(logits, targets, problem, loss_fn, splits.labels)
            outputs[name] = (logits, targets)
    results["timing"] = timing_summary(state.timing, time.perf_counter() - started, features.summary())
    if teacher is not None:  # student vs teacher: scores, parameters, inference speed -> distillation.json
        distill.compare(teacher, cfg, accelerator, adapter, model, prepared["validation"], results, run_dir, reporter)
    if main:
        adapter.model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        adapter.model.to(memory_format=torch.contiguous_format)  # saved as usual, whatever training used
        if lora is not None:  # merged into plain weights unless lora.merge: false; lora.json
            lora.finish(adapter, run_dir)
        atomic_write_dir(run_dir / "model", lambda d: adapter.save(d, {"task": cfg.task, "labels": splits.labels}))
        atomic_write_json(run_dir / "stages.json", state.stages_log)
        atomic_write_json(run_dir / "lrs.json", state.lr_log)
        atomic_write_json(run_dir / "metrics.json", results)
        for name, (logits, targets) in outputs.items():
            write_predictions(run_dir / f"predictions_{name}.jsonl", getattr(splits, name).inputs, logits, targets,
                              problem, splits.labels, loss_fn)
        write_run_documents(run_dir, reporter.log)
    tracking.log_final(accelerator, results, step=state.epoch)
    accelerator.wait_for_everyone()
    print_summary(reporter, results, monitor, results["timing"], run_dir)
    return RunResult(run_dir, results)


def _is_peft(model) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def with_l1(loss_fn, params: list, strength: float):
    """The training loss plus `strength` x sum |w| over the trainable parameters (the notes' L1)."""
    if not strength:
        return loss_fn

    def penalised(logits, targets, *index):  # index: a distillation loss's example indices (loop.batch_loss)
        return loss_fn(logits, targets, *index) + strength * sum(p.abs().sum() for p in params)

    penalised.uses_index = getattr(loss_fn, "uses_index", False)
    return penalised


def _auto_batch(cfg, accelerator, adapter, datasets, problem, splits, reporter, run_dir) -> Config:
    """Replace `batch_size: auto` by the largest size that fits, keeping the recipe's effective batch."""
    from lobell import recipe
    from lobell.train.batch_finder import find_batch_size, worst_case_batch

    target = recipe.decide_batch(recipe.profile_of(cfg, splits, adapter))
    collate = build_loader(cfg.model_copy(update={"batch_size": 1}), adapter, datasets["train"], train=False).collate_fn
    model = adapter.model.to(accelerator.device)
    loss_fn = multitask.loss_for(splits.labels) or build_loss(cfg.loss, problem, splits.train.targets,
                                                              num_outputs(problem, splits.labels))

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


def _apply_recipe(cfg: Config, splits, adapter, reporter, run_dir: Path, main: bool, explicit_plan: bool) -> Config:
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


def _ddp_handlers(cfg: Config) -> list:
    """Audio encoders skip parameters in some steps: wav2vec2-style layerdrop drops whole blocks, and
    the SpecAugment embedding is only used where a mask falls. DDP must then look for unused
    parameters each step (as the HF Trainer does), or it stops with "Expected to have finished
    reduction". Text and image models use every trainable parameter every step: no extra cost."""
    if parse_task(cfg.task)[0] not in ("audio", "speech"):
        return []
    from accelerate.utils import DistributedDataParallelKwargs

    return [DistributedDataParallelKwargs(find_unused_parameters=True)]


def make_accelerator(precision: str, **kwargs) -> Accelerator:
    """An Accelerator for this process; `auto` precision is bf16 only where the hardware runs it fast.
    `kwargs` go to Accelerator (the trackers' `log_with` and `project_dir`)."""
    AcceleratorState._reset_state()  # a fresh state per run, so several runs can share one process
    return Accelerator(mixed_precision=resolve_precision(precision), cpu=not torch.cuda.is_available(), **kwargs)


def resolve_precision(precision: str) -> str:
    if precision == "fp32":
        return "no"
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # CPUs without AVX-512 BF16/AMX emulate bf16 matmuls slower than fp32: stay in fp32 there.
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"


def _starting_point(run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run (refused where a run already is)."""
    latest = ckpt.latest_checkpoint(run_dir)
    if resume:
        if latest is None:
            raise LobellError(f"run folder '{run_dir}' has no checkpoint to resume from")
        return latest
    if latest is not None or (run_dir / "model").exists():
        raise LobellError(f"run folder '{run_dir}' already holds a run; resume it with `lobell train --resume "
                          f"{run_dir}`, or set output_dir to a new folder")
    return None


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


def _trim_metrics(run_dir: Path, epoch: int) -> None:
    """Drop lines a killed run wrote after its last checkpoint (they will be written again)."""
    path = run_dir / "metrics.jsonl"
    lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["epoch"] <= epoch]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


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


def _monitor(cfg: Config, problem: str) -> str:
    monitor = cfg.early_stopping.monitor
    if problem == "regression" and monitor == "accuracy":  # the default; also what saved configs hold
        return "rmse"
    if problem == "ctc" and monitor == "accuracy":  # speech recognition: word error rate, minimised
        return "wer"
    return monitor


def _evaluator(accelerator, adapter, problem, loss_fn, reporter, labels, eval_batch_size):
    def evaluate(model, loader, step_adapter=adapter) -> dict[str, float]:
        with faults.out_of_memory_as_user_error("eval_batch_size", eval_batch_size, "evaluation"):
            logits, targets, _ = predict_logits(accelerator, step_adapter, model, loader, reporter)
        return _metrics(logits, targets, problem, loss_fn, labels)
    return evaluate


def _metrics(logits, targets, problem, loss_fn, labels) -> dict[str, float]:
    metrics = compute_metrics(logits, targets, problem, labels)
    metrics["loss"] = float(loss_fn(torch.from_numpy(logits), torch.from_numpy(targets)))
    return metrics


def _stop_together(accelerator: Accelerator, stop: bool) -> bool:
    """Every rank leaves the loop at the same epoch: the main process decides (set/check_trigger)."""
    if stop and accelerator.is_main_process:
        accelerator.set_trigger()
    return accelerator.check_trigger()
