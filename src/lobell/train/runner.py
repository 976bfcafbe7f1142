"""`train(cfg)`: the whole fine-tuning run, read top to bottom as a numbered story."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed

from lobell.config import Config
from lobell.console import Reporter
from lobell.data.splits import Splits
from lobell.evaluate import compute_metrics, write_predictions
from lobell.run_dir import append_jsonl, atomic_write_dir, atomic_write_json, atomic_write_text
from lobell.strategies.plans import Stage, apply_stage, build_plan, param_groups
from lobell.tasks import build_adapter, build_dataset, build_loader, load_task_splits, num_outputs, parse_task
from lobell.train.losses import build_loss
from lobell.train.loop import EarlyStopping, predict_logits, train_epoch
from lobell.train.optim import build_optimizer, build_scheduler


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict  # {"before": ..., "validation": ..., "test": ...}


def train(cfg: Config, *, quiet: bool = False, splits: Splits | None = None, adapter=None,
          plan: list[Stage] | None = None) -> RunResult:
    """Fine-tune `cfg.model` on `cfg.data` and leave a run folder; see the README for its contents.

    The Python API passes in-memory `splits`, its already-built `adapter` and, after
    `freeze_backbone()`/`freeze_to()`, an explicit single-stage `plan`; the CLI passes none.
    """
    # 1. Accelerator and seed.
    accelerator = make_accelerator(cfg.precision)
    set_seed(cfg.seed)
    reporter = Reporter(quiet, accelerator.is_main_process)
    run_dir = Path(cfg.resolved_output_dir())
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        (run_dir / "metrics.jsonl").write_text("")

    # 2. Data, then the backbone with its new head and its own preprocessing.
    modality, problem = parse_task(cfg.task)
    splits = splits or load_task_splits(cfg, modality, problem)
    for note in splits.notes:
        reporter.log(note)
    adapter = adapter or build_adapter(cfg, modality, problem, splits.labels)
    reporter.log(f"model {cfg.model}: {len(adapter.layer_map)} layer groups ({adapter.layer_map.source}); "
                 f"precision {accelerator.mixed_precision}, {accelerator.num_processes} process(es) on {accelerator.device}")
    datasets = {"train": build_dataset(cfg, adapter, splits.train), "validation": build_dataset(cfg, adapter, splits.validation)}
    if splits.test is not None:
        datasets["test"] = build_dataset(cfg, adapter, splits.test)
    loaders = {name: build_loader(cfg, adapter, ds, train=name == "train") for name, ds in datasets.items()}
    train_sampler = loaders["train"].batch_sampler
    prepared = dict(zip(loaders, accelerator.prepare(*loaders.values())))

    # 3. Loss and the freeze plan (checked before any training).
    loss_fn = build_loss(cfg.loss, problem, splits.train.targets, num_outputs(problem, splits.labels))
    plan = plan or build_plan(cfg.strategy, adapter.layer_map, cfg.epochs)
    monitor = _monitor(cfg, problem)
    stopper = EarlyStopping(monitor, cfg.early_stopping.patience, cfg.early_stopping.min_delta)

    # 4. Stages: set what trains, build optimizer and schedule afresh, prepare, then epochs.
    model, epoch, before, best_state, stages_log, lr_log = adapter.model, 0, None, None, [], []
    timing = {"seconds": 0.0, "data_seconds": 0.0, "samples": 0, "tokens": 0}
    started = time.perf_counter()
    for index, stage in enumerate(plan):
        model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        accelerator.free_memory()
        apply_stage(model, adapter.layer_map, stage)
        optimizer = build_optimizer(cfg.optimizer, param_groups(model, adapter.layer_map, stage, cfg.optimizer.lr,
                                                                 cfg.optimizer.weight_decay))
        scheduler = build_scheduler(cfg.scheduler, optimizer, stage.epochs * len(prepared["train"]))
        model, optimizer = accelerator.prepare(model, optimizer)
        stages_log.append(_freeze_report(reporter, adapter, stage, index, epoch, cfg.optimizer.lr, cfg.strategy.train_bn))
        if before is None:
            before = _evaluate(accelerator, adapter, model, prepared["validation"], problem, loss_fn, reporter, splits.labels)
            reporter.log(f"before fine-tuning: validation {_fmt(before)}")
            append_jsonl(run_dir / "metrics.jsonl", {"epoch": 0, "validation": before}) if accelerator.is_main_process else None
        for _ in range(stage.epochs):
            epoch += 1
            train_sampler.set_epoch(epoch) if hasattr(train_sampler, "set_epoch") else None
            stats = train_epoch(accelerator, adapter, model, prepared["train"], optimizer, scheduler, loss_fn,
                                max_grad_norm=cfg.max_grad_norm, train_bn=cfg.strategy.train_bn, reporter=reporter,
                                description=f"epoch {epoch}/{cfg.epochs}", step_offset=len(lr_log), lr_log=lr_log)
            for key in timing:
                timing[key] += getattr(stats, key)
            metrics = _evaluate(accelerator, adapter, model, prepared["validation"], problem, loss_fn, reporter, splits.labels)
            improved = stopper.update(metrics, epoch)
            if improved:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in accelerator.get_state_dict(model).items()}
            record = {"epoch": epoch, "stage": index, "train_loss": stats.loss, "validation": metrics, "lrs": stats.lrs,
                      "seconds": stats.seconds}
            if accelerator.is_main_process:
                append_jsonl(run_dir / "metrics.jsonl", record)
            reporter.log(f"epoch {epoch}: train loss {stats.loss:.4f}, validation {_fmt(metrics)}"
                         f"{'  (best)' if improved else ''}")
            if _stop_together(accelerator, stopper.should_stop):
                break
        stages_log[-1]["last_epoch"] = epoch
        if stopper.should_stop:
            reporter.log(f"early stopping: {monitor} has not improved for {stopper.patience} epoch(s); "
                         f"best was epoch {stopper.best_epoch}")
            break

    # 5. Best weights back, final metrics, model folder, timing.
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    if best_state is not None:
        model.load_state_dict(best_state)
    model = accelerator.prepare_model(model, evaluation_mode=True)
    results = {"before": before, "best_epoch": stopper.best_epoch}
    outputs = {}
    for name in ("validation", "test"):
        if name in prepared:
            logits, targets, _ = predict_logits(accelerator, adapter, model, prepared[name], reporter)
            results[name] = _metrics(logits, targets, problem, loss_fn, splits.labels)
            outputs[name] = (logits, targets)
    timing = _timing(timing, time.perf_counter() - started)
    results["timing"] = timing
    if accelerator.is_main_process:
        adapter.model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        atomic_write_dir(run_dir / "model", lambda d: adapter.save(d, {"task": cfg.task, "labels": splits.labels}))
        atomic_write_json(run_dir / "stages.json", stages_log)
        atomic_write_json(run_dir / "lrs.json", lr_log)
        atomic_write_json(run_dir / "metrics.json", results)
        for name, (logits, targets) in outputs.items():
            split = getattr(splits, name)
            write_predictions(run_dir / f"predictions_{name}.jsonl", split.inputs, logits, targets, problem,
                              splits.labels, loss_fn)
    accelerator.wait_for_everyone()
    _summary(reporter, results, monitor, timing, run_dir)
    return RunResult(run_dir, results)


def make_accelerator(precision: str) -> Accelerator:
    """An Accelerator for this process; `auto` precision is bf16 only where the hardware runs it fast."""
    AcceleratorState._reset_state()  # a fresh state per run, so several runs can share one process
    return Accelerator(mixed_precision=resolve_precision(precision), cpu=not torch.cuda.is_available())


def resolve_precision(precision: str) -> str:
    if precision == "fp32":
        return "no"
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # CPUs without AVX-512 BF16/AMX emulate bf16 matmuls slower than fp32: stay in fp32 there.
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"


def _monitor(cfg: Config, problem: str) -> str:
    monitor = cfg.early_stopping.monitor
    if problem == "regression" and "monitor" not in cfg.early_stopping.model_fields_set:
        return "rmse"
    return monitor


def _evaluate(accelerator, adapter, model, loader, problem, loss_fn, reporter, labels) -> dict[str, float]:
    logits, targets, _ = predict_logits(accelerator, adapter, model, loader, reporter)
    return _metrics(logits, targets, problem, loss_fn, labels)


def _metrics(logits, targets, problem, loss_fn, labels) -> dict[str, float]:
    metrics = compute_metrics(logits, targets, problem, labels)
    metrics["loss"] = float(loss_fn(torch.from_numpy(logits), torch.from_numpy(targets)))
    return metrics


def _stop_together(accelerator: Accelerator, stop: bool) -> bool:
    """Every rank leaves the loop at the same epoch: the main process decides (set/check_trigger)."""
    if stop and accelerator.is_main_process:
        accelerator.set_trigger()
    return accelerator.check_trigger()


def _freeze_report(reporter: Reporter, adapter, stage: Stage, index: int, epoch: int, lr: float,
                   train_bn: bool) -> dict:
    model, groups = adapter.model, adapter.layer_map.groups
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    lrs = {groups[g].name: lr * stage.lr_scales[g] for g in stage.trainable}
    reporter.log(f"stage {index + 1} '{stage.name}' from epoch {epoch + 1}: {trainable:,} of {total:,} parameters "
                 f"train ({len(stage.trainable)} of {len(groups)} groups); frozen batch-norm "
                 f"{'keeps training its statistics' if train_bn else 'keeps its running statistics'}")
    for g in stage.trainable:
        reporter.log(f"  group {g:2d} {groups[g].name:<40} lr {lrs[groups[g].name]:.2e}")
    return {"stage": index, "name": stage.name, "first_epoch": epoch + 1, "last_epoch": epoch + stage.epochs,
            "trainable_groups": [groups[g].name for g in stage.trainable], "lrs": lrs,
            "trainable_params": trainable}


def _timing(totals: dict, wall: float) -> dict:
    compute = max(totals["seconds"] - totals["data_seconds"], 1e-9)
    return {"wall_seconds": wall, "train_seconds": totals["seconds"],
            "train_samples_per_second": totals["samples"] / max(totals["seconds"], 1e-9),
            "train_tokens_per_second": totals["tokens"] / max(totals["seconds"], 1e-9),
            "data_loading_share": totals["data_seconds"] / max(totals["seconds"], 1e-9),
            "compute_share": compute / max(totals["seconds"], 1e-9)}


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _summary(reporter: Reporter, results: dict, monitor: str, timing: dict, run_dir: Path) -> None:
    before, after = results["before"].get(monitor), results["validation"].get(monitor)
    reporter.log(f"time: {timing['train_samples_per_second']:.1f} train samples/s, "
                 f"{timing['train_tokens_per_second']:.0f} tokens/s, data loading {timing['data_loading_share']:.0%} "
                 f"of training time")
    reporter.result(f"validation {monitor}: {before:.4f} before fine-tuning -> {after:.4f} after (best epoch "
                    f"{results['best_epoch']})")
    if "test" in results:
        reporter.result(f"test: {_fmt(results['test'])}")
    reporter.result(f"run folder: {run_dir}")
