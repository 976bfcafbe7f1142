"""What a run prints and records about itself: freeze reports, timing, the closing summary."""

from __future__ import annotations

from pathlib import Path

from lobell.console import Reporter
from lobell.strategies.plans import Stage


def freeze_report(reporter: Reporter, adapter, stage: Stage, index: int, epoch: int, lr: float,
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
    always_frozen = [group.name for group in groups if group.frozen]
    for name in always_frozen:
        reporter.log(f"  {name}: frozen in every stage (the feature encoder; strategy.train_feature_encoder=true "
                     f"trains it)")
    return {"stage": index, "name": stage.name, "first_epoch": epoch + 1, "last_epoch": epoch + stage.epochs,
            "trainable_groups": [groups[g].name for g in stage.trainable], "lrs": lrs,
            "trainable_params": trainable, **({"always_frozen": always_frozen} if always_frozen else {})}


def timing_summary(totals: dict, wall: float, feature_cache: dict | None = None) -> dict:
    """Throughput and where training time went; `feature_cache`: the cache's own keys (build time,
    head-only epochs and their mean seconds). Tokens count what the backbone read while training:
    none in cached epochs, so tokens/s is over all training time, cached epochs included."""
    compute = max(totals["seconds"] - totals["data_seconds"], 1e-9)
    return {"wall_seconds": wall, "train_seconds": totals["seconds"],
            "train_samples_per_second": totals["samples"] / max(totals["seconds"], 1e-9),
            "train_tokens_per_second": totals["tokens"] / max(totals["seconds"], 1e-9),
            "data_loading_share": totals["data_seconds"] / max(totals["seconds"], 1e-9),
            "compute_share": compute / max(totals["seconds"], 1e-9), **(feature_cache or {})}


def fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def print_summary(reporter: Reporter, results: dict, monitor: str, timing: dict, run_dir: Path) -> None:
    before, after = results["before"].get(monitor), results["validation"].get(monitor)
    tokens = f"{timing['train_tokens_per_second']:.0f} tokens/s, " if timing["train_tokens_per_second"] else ""
    reporter.log(f"time: {timing['train_samples_per_second']:.1f} train samples/s, {tokens}data loading "
                 f"{timing['data_loading_share']:.0%} of training time")
    if timing.get("cached_epochs"):
        reporter.log(f"feature cache: built in {timing['feature_cache_seconds']:.1f} s for "
                     f"{timing['feature_cache_examples']:,} examples, then {timing['cached_epochs']} head-only "
                     f"epoch(s) at ~{timing['cached_epoch_seconds']:.2f} s each")
    reporter.result(f"validation {monitor}: {before:.4f} before fine-tuning -> {after:.4f} after (best epoch "
                    f"{results['best_epoch']})")
    if "test" in results:
        reporter.result(f"test: {fmt(results['test'])}")
    reporter.result(f"run folder: {run_dir}")
