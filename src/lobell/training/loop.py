"""One training epoch, one evaluation pass, and early stopping: the loop fits on a screen."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator

from lobell.console import Reporter
from lobell.errors import LobellError
from lobell.evaluate import is_minimised
from lobell.strategies.plans import freeze_batch_norm


@dataclass
class EpochStats:
    loss: float
    samples: int
    tokens: int
    seconds: float
    data_seconds: float
    lrs: dict[str, float] = field(default_factory=dict)


def train_epoch(accelerator: Accelerator, adapter, model, loader, optimizer, scheduler, loss_fn,
                *, max_grad_norm: float | None, train_bn: bool, reporter: Reporter, description: str,
                first_step: int = 0, grad_accum: int = 1, lr_log: list | None = None,
                after_step: Callable[[int], None] | None = None) -> EpochStats:
    """Run one pass over `loader`; the optimizer and schedule step every `grad_accum` batches.

    `first_step` counts batches already done this epoch (a resumed run's loader skips them);
    `after_step(step)` runs after every optimizer step (checkpointing), outside the step itself.
    """
    model.train()
    if not train_bn:
        freeze_batch_norm(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    total_loss, samples, tokens, data_time = 0.0, 0, 0, 0.0
    last = first_step + len(loader)
    start = tick = time.perf_counter()
    with reporter.progress(description, last) as bar:
        bar.advance(first_step)
        for step, batch in enumerate(loader, start=first_step + 1):
            data_time += time.perf_counter() - tick
            sync = step % grad_accum == 0 or step == last
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                logits = adapter.forward(model, batch)
                loss = batch_loss(loss_fn, logits, batch)
                if not torch.isfinite(loss):
                    raise LobellError(f"the loss became {loss.item()} at step {step} of {description}; lower "
                                      f"optimizer.lr, set max_grad_norm, or use precision=fp32")
                accelerator.backward(loss / grad_accum)
            if sync:
                if max_grad_norm is not None:
                    accelerator.clip_grad_norm_(trainable, max_grad_norm)
                if lr_log is not None:  # the LRs this step uses
                    lr_log.append({"step": len(lr_log) + 1, **group_lrs(optimizer)})
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            total_loss += loss.item() * len(batch["targets"])
            samples += len(batch["targets"])
            if "input_ids" in batch and "attention_mask" in batch:  # text; an audio mask counts samples
                tokens += int(batch["attention_mask"].sum())
            bar.advance(1, status=f"loss {loss.item():.4f}")
            if sync and after_step is not None:
                after_step(step)
            tick = time.perf_counter()
    seconds = time.perf_counter() - start
    return EpochStats(total_loss / max(samples, 1), samples, tokens, seconds, data_time, group_lrs(optimizer))


def batch_loss(loss_fn, logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """loss_fn(logits, targets); a loss marked `uses_index` (distillation's cached teacher outputs) also
    gets the batch's example indices."""
    if getattr(loss_fn, "uses_index", False):
        return loss_fn(logits, batch["targets"], batch["index"])
    return loss_fn(logits, batch["targets"])


def group_lrs(optimizer) -> dict[str, float]:
    """The current LR of each layer group (its decayed and non-decayed halves share one)."""
    return {g["layer_group"]: g["lr"] for g in optimizer.param_groups}


@torch.inference_mode()
def predict_logits(accelerator: Accelerator, adapter, model, loader, reporter: Reporter,
                   description: str = "evaluate") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, targets and dataset indices for every example exactly once, across all processes."""
    model.eval()
    outputs, targets, indices = [], [], []
    with reporter.progress(description, len(loader)) as bar:
        for batch in loader:
            logits, batch_targets = adapter.forward(model, batch), batch["targets"]
            if logits.ndim == 3:  # frame outputs (CTC): frames and transcripts differ in length per process
                logits = accelerator.pad_across_processes(logits, dim=1, pad_index=0)
                batch_targets = accelerator.pad_across_processes(batch_targets, dim=1, pad_index=-100)
            gathered = accelerator.gather_for_metrics((logits.float(), batch_targets, batch["index"]))
            outputs.append(gathered[0].cpu())
            targets.append(gathered[1].cpu())
            indices.append(gathered[2].cpu())
            bar.advance()
    logits_all = _concatenate(outputs, 0).numpy()
    order = np.argsort(torch.cat(indices).numpy(), kind="stable")
    return logits_all[order], _concatenate(targets, -100).numpy()[order], torch.cat(indices).numpy()[order]


def _concatenate(parts: list[torch.Tensor], pad: float) -> torch.Tensor:
    """Batches stacked; sequence outputs (CTC frames: padding is 0, which marks a frame as not audio;
    transcripts: -100) are padded to the longest first."""
    if parts[0].ndim < 2 or len({p.shape[1] for p in parts}) == 1:
        return torch.cat(parts)
    longest = max(p.shape[1] for p in parts)
    padded = []
    for part in parts:
        shape = (part.shape[0], longest - part.shape[1], *part.shape[2:])
        padded.append(torch.cat([part, torch.full(shape, pad, dtype=part.dtype)], dim=1))
    return torch.cat(padded)


class EarlyStopping:
    """Tracks the monitored metric; says when it improved and when patience has run out."""

    def __init__(self, monitor: str, patience: int | None, min_delta: float = 0.0):
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.sign = -1.0 if is_minimised(monitor) else 1.0
        self.best = -math.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def update(self, metrics: dict[str, float], epoch: int) -> bool:
        """Record this epoch's metrics; return True when they are the best so far."""
        score = self.sign * metrics[self.monitor]
        if score > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
