"""Optimizers and LR schedules, built afresh for each stage of a freeze plan."""

from __future__ import annotations

import torch
from transformers import get_scheduler

from lobell.config import OptimizerConfig, SchedulerConfig

_SCHEDULE_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def build_optimizer(cfg: OptimizerConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """The optimizer over `groups` (each already carries its lr = optimizer.lr x group scale)."""
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum)


def build_scheduler(cfg: SchedulerConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """A per-step schedule that multiplies every group's LR by the same factor."""
    warmup = int(round(cfg.warmup_ratio * total_steps))
    return get_scheduler(_SCHEDULE_NAMES[cfg.name], optimizer, num_warmup_steps=warmup,
                         num_training_steps=max(total_steps, 1))
