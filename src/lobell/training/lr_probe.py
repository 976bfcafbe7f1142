"""`optimizer.lr: auto`: a short LR range test on the first stage picks the head's LR, and says why.

The probe is `lobell lr-find`'s sweep (training/lr_find.py), shortened to a few dozen steps with a
lighter smoothing, run inside trial.sandbox so the model, its flags and the RNGs are restored
bit for bit. The rule (`pick_lr`): a tenth of the LR where the smoothed loss was lowest (fastai's
"minimum / 10"): the minimum sits just before the loss turns up, and an order of magnitude below it
the loss still falls but the step is safely short of divergence. The steepest-descent point
(`lobell lr-find`'s suggestion) is recorded too but not used: on a short sweep whose loss barely
moves, the steepest fall is the one just before divergence (0.08 for AdamW on the test BERT).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from lobell.training.lr_find import lr_range_test, suggest
from lobell.training.trial import OnDevice, sandbox

# A few dozen steps over four decades of the head's LR (the groups move at their scales): 10 a
# decade; the sweep stops sooner where the loss diverges. Adaptive optimizers fine-tune at head LRs
# of 1e-5..1e-3 and SGD at 1e-3..1e-1; a full 1e-6..1 sweep of 40 steps on MiniLM picked 2.4e-2 for
# AdamW from noise (docs/recipe.md). 0.7 smoothing lags ~3 steps (0.9 lags ~10).
PROBE_STEPS, PROBE_SMOOTHING = 40, 0.7
PROBE_RANGE = {"sgd": (1e-4, 1.0)}  # others (AdamW, Adam, RMSprop): DEFAULT_RANGE
DEFAULT_RANGE = (1e-6, 1e-2)
MIN_DROP = 0.02  # a lowest smoothed loss less than 2% under the first: said in the reason


@dataclass
class Probe:
    """recipe.json's `lr_probe`: the chosen head LR, the rule and the curve it came from."""

    lr: float
    rule: str
    reason: str
    steps: int
    swept: list[float]  # [first, last] head LR of the sweep
    min_loss_lr: float
    steepest_lr: float
    first_loss: float
    min_loss: float
    curve: list[list[float]]  # [lr, smoothed loss], about a dozen points along the sweep
    seconds: float


def wants_probe(cfg) -> bool:
    """The hook: `optimizer.lr: auto`, set by you or by the recipe when it is unsure of its LR."""
    return cfg.optimizer.lr == "auto"


def pick_lr(lrs: list[float], losses: list[float]) -> tuple[float, str, str]:
    """(lr, rule, reason) from a sweep's LRs and smoothed losses; the LR lies inside the swept range."""
    if len(lrs) < 5:
        return lrs[0], "first-lr", f"the loss diverged after {len(lrs)} step(s): the smallest LR swept"
    lowest = int(np.argmin(losses))
    if lowest == 0:
        return lrs[0], "first-lr", "the smoothed loss only rose: the smallest LR swept"
    lr = max(float(f"{lrs[lowest] / 10:.3g}"), lrs[0])
    drop = 1 - losses[lowest] / losses[0]
    how = (f"fell {drop:.0%}, from {losses[0]:.3g} to {losses[lowest]:.3g}," if drop >= MIN_DROP else
           f"barely moved ({losses[0]:.3g} to {losses[lowest]:.3g}), lowest")
    return lr, "min-loss/10", (f"the smoothed loss {how} at LR {lrs[lowest]:.2e}; a tenth of that, {lr:.2e}, "
                               f"keeps clear of divergence")


def probe_lr(adapter, stage, cfg, loader, loss_fn, accelerator, steps: int = PROBE_STEPS) -> Probe:
    """Sweep the first stage's LRs for `steps` batches of `loader` (not yet prepared) and pick one."""
    start, (low, high) = time.perf_counter(), PROBE_RANGE.get(cfg.optimizer.name, DEFAULT_RANGE)
    model = adapter.model.to(accelerator.device)
    with sandbox(model), accelerator.autocast():
        finding = lr_range_test(adapter, stage, cfg, OnDevice(loader, accelerator.device), loss_fn, steps,
                                start_lr=low, end_lr=high, smoothing=PROBE_SMOOTHING)
    lr, rule, reason = pick_lr(finding.lrs, finding.losses)
    steepest, _ = suggest(finding.lrs, finding.losses)
    lowest = int(np.argmin(finding.losses))
    every = max(1, len(finding.lrs) // 12)
    curve = [[float(a), float(b)] for a, b in zip(finding.lrs[::every], finding.losses[::every])]
    return Probe(float(lr), rule, reason, len(finding.lrs), [low, float(finding.lrs[-1])],
                 float(finding.lrs[lowest]), float(steepest), float(finding.losses[0]), float(finding.losses[lowest]),
                 curve, round(time.perf_counter() - start, 2))
