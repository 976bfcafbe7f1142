"""LR range test (Smith 2015, fastai's lr_find) on the first stage's groups, leaving them untouched."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lobell.run_dir import atomic_write_bytes
from lobell.strategies.plans import Stage, apply_stage, param_groups
from lobell.training.optim import build_optimizer
from lobell.training.trial import sandbox

# Sweep bounds for the head's LR; every group moves with it at its own scale.
START_LR, END_LR = 1e-7, 1.0
SMOOTHING = 0.9  # exponential moving average of the loss, as in fastai
DIVERGED = 4.0  # stop once the smoothed loss exceeds 4x its minimum


@dataclass
class LRFinding:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float
    rule: str


def lr_range_test(adapter, stage: Stage, cfg, loader, loss_fn, steps: int = 100, *, start_lr: float = START_LR,
                  end_lr: float = END_LR, smoothing: float = SMOOTHING) -> LRFinding:
    """Sweep the head LR exponentially from `start_lr` to `end_lr` over `steps` batches.

    Model weights, buffers, `requires_grad` flags and the RNGs are restored afterwards
    (`trial.sandbox`), and the optimizer used for the sweep is thrown away: the model is exactly as it was.
    """
    model = adapter.model
    with sandbox(model):  # weights, buffers, flags, gradients, RNG and mode put back afterwards
        apply_stage(model, adapter.layer_map, stage)
        optimizer = build_optimizer(cfg.optimizer.model_copy(update={"lr": start_lr}),  # optimizer.lr may be `auto`
                                    param_groups(model, adapter.layer_map, stage, start_lr, cfg.optimizer.weight_decay),
                                    fused=cfg.speed.fused_optimizer)
        factor = (end_lr / start_lr) ** (1 / max(steps - 1, 1))
        lrs, losses, avg, best = [], [], 0.0, math.inf
        model.train()
        batches = _cycle(loader)
        for i in range(steps):
            batch = next(batches)
            lr = start_lr * factor ** i
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            loss = loss_fn(adapter.forward(model, batch), batch["targets"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            avg = smoothing * avg + (1 - smoothing) * value
            smoothed = avg / (1 - smoothing ** (i + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if not math.isfinite(smoothed) or smoothed > DIVERGED * best:
                break
    suggestion, rule = suggest(lrs, losses)
    return LRFinding(lrs, losses, suggestion, rule)


def suggest(lrs: list[float], losses: list[float]) -> tuple[float, str]:
    """The LR where the smoothed loss falls fastest (steepest negative slope in log-LR)."""
    if len(lrs) < 5:
        return lrs[0] if lrs else START_LR, "too few steps before the loss diverged: the smallest LR swept"
    trimmed = len(losses) - max(1, len(losses) // 10)  # ignore the divergence at the end
    slopes = np.gradient(np.array(losses[:trimmed]), np.log(np.array(lrs[:trimmed])))
    index = int(np.argmin(slopes))
    return float(lrs[index]), "steepest descent of the smoothed loss against log(LR)"


def plot(finding: LRFinding, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(finding.lrs, finding.losses)
    axes.axvline(finding.suggestion, color="tab:red", linestyle="--", label=f"suggested {finding.suggestion:.2e}")
    axes.set(xscale="log", xlabel="head learning rate", ylabel="smoothed training loss", title="LR range test")
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def _cycle(loader):
    while True:
        yield from loader


def find_lr(cfg, steps: int = 100, output: Path | None = None) -> tuple[LRFinding, Path]:
    """`lobell lr-find`: data, model and the recipe as `train` would use them, then the sweep."""
    from lobell import recipe
    from lobell.strategies.plans import build_plan
    from lobell.tasks import build_adapter, build_dataset, build_loader, load_task_splits, parse_task
    from lobell.training.losses import loss_for

    modality, problem = parse_task(cfg.task)
    splits = load_task_splits(cfg, modality, problem)
    adapter = build_adapter(cfg, modality, problem, splits.labels)
    if cfg.recipe:
        cfg = recipe.apply(cfg, recipe.decide(cfg, recipe.profile_of(cfg, splits, adapter)))
    if cfg.batch_size == "auto":
        cfg = cfg.model_copy(update={"batch_size": recipe.decide_batch(recipe.profile_of(cfg, splits, adapter))})
    if cfg.strategy.name == "lora":  # the same adapters `train` puts on
        from lobell.strategies.lora import apply_lora

        apply_lora(adapter, cfg.lora, cfg.optimizer.name)
    loader = build_loader(cfg, adapter, build_dataset(cfg, adapter, splits.train), train=True)
    loss_fn = loss_for(cfg.loss, splits.problem, splits.train.targets)  # as train's: multi-task runs too
    stage = build_plan(cfg.strategy, adapter.layer_map, cfg.epochs)[0]
    finding = lr_range_test(adapter, stage, cfg, loader, loss_fn, steps)
    path = output or Path(cfg.output_dir or "runs") / "lr_find.png"
    plot(finding, path)
    return finding, path
