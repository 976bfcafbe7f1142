"""Optimizers and LR schedules, built afresh for each stage of a freeze plan."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau

from lobell.config import OptimizerConfig, SchedulerConfig


_FUSED_DEVICES = ("cpu", "cuda")


def build_optimizer(cfg: OptimizerConfig, groups: list[dict], fused: bool = True) -> torch.optim.Optimizer:
    """The optimizer over `groups` (each already carries its lr = optimizer.lr x group scale).

    `fused` uses torch's single-kernel update where it exists (AdamW, Adam, SGD) and every
    parameter is a float tensor on a CPU or CUDA device; RMSprop has none and keeps the default.
    """
    options = {"fused": True} if fused and cfg.name != "rmsprop" and _fusable(groups) else {}
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **options)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, **options)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               **options)
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum)


def _fusable(groups: list[dict]) -> bool:
    params = [p for group in groups for p in group["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type in _FUSED_DEVICES for p in params)


def build_scheduler(cfg: SchedulerConfig, optimizer: torch.optim.Optimizer, total_steps: int,
                    steps_per_epoch: int | None = None):
    """A per-step schedule that multiplies every group's LR by the same factor.

    `plateau` is the exception: it acts once per epoch on the monitored metric (`epoch_end`),
    so the group LR ratios still hold.
    """
    total_steps = max(total_steps, 1)
    warmup = int(round(cfg.warmup_ratio * total_steps))
    if cfg.name in WARMUP_SCHEDULES:
        return LambdaLR(optimizer, WARMUP_SCHEDULES[cfg.name](warmup, total_steps))
    if cfg.name == "step":
        every = cfg.step_epochs * max(steps_per_epoch or total_steps, 1)

        def step_factor(step: int) -> float:
            return min(1.0, (step + 1) / warmup) if step < warmup else cfg.gamma ** (step // every)
        return LambdaLR(optimizer, step_factor)
    if cfg.name == "one-cycle":
        return OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps,
                          pct_start=max(cfg.warmup_ratio, 1 / total_steps), cycle_momentum=False)
    return PlateauSchedule(optimizer, cfg.gamma, cfg.patience)


def _warmup_then(decay):
    """transformers' schedules (get_{constant,linear,cosine}_schedule_with_warmup), factor for factor:
    a linear warm-up from 0, then `decay(step, warmup, total)`. Written out because
    `transformers.optimization` imports trainer_utils and peft: 5 s before an image run, which needs
    neither (tests/training/test_optim_schedules.py checks them against transformers')."""
    def schedule(warmup: int, total: int):
        def factor(step: int) -> float:
            return step / max(1, warmup) if step < warmup else decay(step, warmup, total)
        return factor
    return schedule


WARMUP_SCHEDULES = {
    "constant": _warmup_then(lambda step, warmup, total: 1.0),
    "linear": _warmup_then(lambda step, warmup, total: max(0.0, (total - step) / max(1, total - warmup))),
    "cosine": _warmup_then(lambda step, warmup, total: max(0.0, 0.5 * (1.0 + math.cos(
        math.pi * (step - warmup) / max(1, total - warmup))))),
}


class PlateauSchedule:
    """ReduceLROnPlateau behind the per-step interface: steps are no-ops, epochs decide."""

    def __init__(self, optimizer, factor: float, patience: int):
        self.inner = ReduceLROnPlateau(optimizer, mode="max", factor=factor, patience=patience)

    def step(self) -> None:
        pass

    def epoch_end(self, score: float) -> None:
        """`score` is higher-is-better (the runner negates losses)."""
        self.inner.step(score if math.isfinite(score) else -math.inf)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
