"""Trial steps that leave no trace: the LR probe and the budget's timing run inside `sandbox`.

The weights, buffers (batch-norm statistics), `requires_grad` flags and every RNG are restored
afterwards, and the trial's optimizer is thrown away, so a run that probes starts training
exactly where a run that does not would (tests/test_budget.py checks bit-identical weights).
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Iterator

import torch

from lobell.strategies.plans import Stage, apply_stage, param_groups
from lobell.training.checkpoint import rng_state, set_rng_state
from lobell.training.loop import batch_loss
from lobell.training.optim import build_optimizer


@contextlib.contextmanager
def sandbox(model: torch.nn.Module) -> Iterator[None]:
    """Run the block, then put the model's state, flags, gradients and the RNGs back as they were."""
    saved = copy.deepcopy(model.state_dict())
    flags = {name: param.requires_grad for name, param in model.named_parameters()}
    rng, training = rng_state(), model.training
    try:
        yield
    finally:
        model.load_state_dict(saved)
        for name, param in model.named_parameters():
            param.requires_grad_(flags[name])
        model.zero_grad(set_to_none=True)
        model.train(training)
        set_rng_state(rng)


class OnDevice:
    """`loader`'s batches on `device`, as often as iterated (trials use the loaders before Accelerate
    prepares them)."""

    def __init__(self, loader, device: torch.device):
        self.loader, self.device = loader, device

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            yield {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}


def time_steps(adapter, stage: Stage, cfg, loader, loss_fn, accelerator, min_steps: int = 5, max_steps: int = 20,
               seconds: float = 2.0) -> dict:
    """Seconds per optimizer step of `stage`, timed on this process's model and a throw-away
    optimizer, then undone: the median of `min_steps` to `max_steps` steps (more while they take
    under `seconds` in all: a busy machine's steps vary), the first, warm-up, left out. `loss_fn`
    is the plain (logits, targets) loss: a distillation loss costs the same, its teacher outputs cached."""
    model = adapter.model.to(accelerator.device)
    times = []
    with sandbox(model):
        apply_stage(model, adapter.layer_map, stage)
        optimizer = build_optimizer(cfg.optimizer.model_copy(update={"lr": 1e-6}),
                                    param_groups(model, adapter.layer_map, stage, 1e-6, cfg.optimizer.weight_decay),
                                    fused=cfg.speed.fused_optimizer)
        model.train()
        batches = _cycle(OnDevice(loader, accelerator.device))
        while len(times) <= min_steps or (len(times) <= max_steps and sum(times[1:]) < seconds):
            start = time.perf_counter()
            for _ in range(cfg.grad_accum):
                batch = next(batches)
                with accelerator.autocast():
                    loss = batch_loss(loss_fn, adapter.forward(model, batch), batch)
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _synchronize(accelerator.device)
            times.append(time.perf_counter() - start)
    return {"step_seconds": statistics.median(times[1:]), "timed_steps": len(times) - 1, "stage": stage.name}


def time_eval_batches(adapter, loader, accelerator, batches: int = 5) -> float:
    """Seconds per evaluation batch (median of `batches` after one warm-up batch)."""
    model = adapter.model.to(accelerator.device)  # outside inference mode: moved weights stay trainable
    training, times = model.training, []
    model.eval()
    try:
        iterator = iter(OnDevice(loader, accelerator.device))
        for _ in range(batches + 1):
            start = time.perf_counter()
            batch = next(iterator, None)
            if batch is None:
                break
            with torch.inference_mode(), accelerator.autocast():
                adapter.forward(model, batch)
            _synchronize(accelerator.device)
            times.append(time.perf_counter() - start)
    finally:
        model.train(training)
    return statistics.median(times[1:] or times)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cycle(loader):
    while True:
        yield from loader
