"""Loss functions: the right one for the task kind by default, class weights from label counts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lobell.config import LossConfig
from lobell.errors import LobellError
from lobell.problems import PROBLEMS, Problem

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DEFAULT_LOSS = {name: problem.default_loss for name, problem in PROBLEMS.items()}
ALLOWED = {name: set(problem.allowed_losses) for name, problem in PROBLEMS.items()}


def import_loss(spec: str) -> LossFn:
    """`package.module:function` -> the function (a custom or metric-based loss)."""
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise LobellError(f"loss.name={spec!r} could not be imported ({exc}); give package.module:function on "
                          f"the Python path") from None
    if not callable(function):
        raise LobellError(f"loss.name={spec!r} is not a function")
    return function


def resolve_loss_name(cfg: LossConfig, problem: str) -> str:
    name = DEFAULT_LOSS[problem] if cfg.name == "auto" else cfg.name
    if name not in ALLOWED[problem]:
        raise LobellError(f"loss.name={name!r} does not fit a {problem} task; use one of {sorted(ALLOWED[problem])}")
    return name


def class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, normalised so a balanced set gets weight 1 for every class."""
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    weights = len(targets) / (num_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def loss_for(cfg: LossConfig, problem: Problem, train_targets: np.ndarray) -> LossFn:
    """The run's loss: the problem's own where it has one (multi-task: each head's loss, weighted),
    else the configured or default loss for its kind."""
    if hasattr(problem, "loss"):
        return problem.loss()
    return build_loss(cfg, problem.name, train_targets, problem.num_outputs)


def build_loss(cfg: LossConfig, problem: str, train_targets: np.ndarray, num_outputs: int) -> LossFn:
    if ":" in cfg.name:
        return import_loss(cfg.name)
    name = resolve_loss_name(cfg, problem)
    weight = None
    if cfg.class_weights == "auto":
        if problem != "classification":
            raise LobellError("loss.class_weights=auto needs a classification task")
        weight = class_weights(train_targets, num_outputs)
    if name == "ctc":
        return ctc_loss
    if name == "cross-entropy":
        def cross_entropy(logits, targets):
            w = weight.to(logits.device) if weight is not None else None
            return F.cross_entropy(logits.float(), targets, weight=w, label_smoothing=cfg.label_smoothing)
        return cross_entropy
    if name == "bce":
        def bce(logits, targets):
            if problem == "classification":
                targets = F.one_hot(targets, logits.shape[1]).float()
                if cfg.label_smoothing:
                    targets = targets * (1 - cfg.label_smoothing) + cfg.label_smoothing / logits.shape[1]
            return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
        return bce
    regression = F.mse_loss if name == "mse" else F.huber_loss
    return lambda logits, targets: regression(logits.float().reshape(-1), targets.float().reshape(-1))


def ctc_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CTC over the audio frames (SpeechAdapter.forward's last channel marks them), blank = id 0.

    Each clip's loss is divided by its transcript's length, then averaged (transformers' `mean`);
    a clip too short for its transcript counts zero rather than inf (`ctc_zero_infinity`).
    """
    log_probs = F.log_softmax(outputs[..., :-1].float(), dim=-1).transpose(0, 1)
    frames = outputs[..., -1].sum(dim=-1).round().long()
    labelled = targets >= 0
    lengths = labelled.sum(dim=-1)
    losses = F.ctc_loss(log_probs, targets[labelled], frames, lengths, blank=0, reduction="none",
                        zero_infinity=True)
    return (losses / lengths.clamp(min=1)).mean()
