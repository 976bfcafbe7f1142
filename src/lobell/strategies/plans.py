"""Freeze plans: each strategy as a list of stages (which groups train, at which LR scale).

A change of what trains is a stage boundary: the runner builds a fresh optimizer and schedule and
prepares the model again at each one, so no scheduler sees a parameter group appear mid-run.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lobell.config import StrategyConfig
from lobell.errors import LobellError
from lobell.strategies.layer_map import LayerMap

# discriminative without an explicit lr_decay: 0.8 per group keeps the embeddings of a 12-block
# encoder at ~5% of the head's LR, in the range the layer-wise-LR literature reports for BERT.
DEFAULT_LR_DECAY = 0.8


@dataclass
class Stage:
    """A run of epochs during which the same groups train at the same LR scales."""

    name: str
    epochs: int
    trainable: list[int]  # group indices, input side first
    lr_scales: dict[int, float]  # group index -> multiplier of optimizer.lr


def build_plan(cfg: StrategyConfig, layer_map: LayerMap, epochs: int) -> list[Stage]:
    """The stages of `cfg.name` for a model with `layer_map`, over `epochs` epochs in all.

    Raises:
        LobellError: the plan names a group the model lacks or would change nothing.
    """
    n = len(layer_map)
    head = n - 1
    if not layer_map.groups[head].is_head:
        raise LobellError("the model has no new head to train: lobell's strategies need one")
    if cfg.name != "full" and n < 2:
        raise LobellError(f"strategy '{cfg.name}' needs a backbone group besides the head; this model has only the head")
    if cfg.max_groups is not None and cfg.max_groups > n:
        raise LobellError(f"strategy.max_groups={cfg.max_groups} but the model has only {n} layer groups "
                          f"(see `lobell layers`)")

    def scales(groups: list[int], factor: float = 1.0) -> dict[int, float]:
        return group_lr_scales(cfg, n, groups, factor)

    everything = [g for g in range(n) if not layer_map.groups[g].frozen]  # a frozen group (audio's CNN) never trains
    if cfg.name == "lora":
        return [_lora_stage(layer_map, epochs)]
    if cfg.name == "feature-extraction":
        return [Stage("head only", epochs, [head], scales([head]))]
    if cfg.name in ("full", "discriminative"):
        return [Stage("all groups", epochs, everything, scales(everything))]
    if cfg.name == "two-stage":
        rest = epochs - cfg.frozen_epochs
        return [Stage("head only", cfg.frozen_epochs, [head], scales([head])),
                Stage("all groups", rest, everything, scales(everything, cfg.unfrozen_lr_factor))]
    return _gradual(cfg, everything, epochs, scales)


def group_lr_scales(cfg: StrategyConfig, num_groups: int, groups: list[int], factor: float = 1.0) -> dict[int, float]:
    """LR multipliers: 1 for the head; pre-trained groups lr_decay ** distance or backbone_lr_scale."""
    decay = cfg.lr_decay if cfg.lr_decay is not None else (DEFAULT_LR_DECAY if cfg.name == "discriminative" else None)
    head = num_groups - 1
    out = {}
    for g in groups:
        distance = head - g
        scale = 1.0 if distance == 0 else (decay ** distance if decay else cfg.backbone_lr_scale)
        out[g] = scale * factor
    return out


def _lora_stage(layer_map: LayerMap, epochs: int) -> Stage:
    """Every group but the frozen pre-trained weights (group 0 of strategies/lora.py's map), at the head's
    LR: the adapters are new weights (B starts at zero), so backbone_lr_scale's caution does not apply."""
    from lobell.strategies.lora import FROZEN_GROUP

    if layer_map.groups[0].name != FROZEN_GROUP:
        raise LobellError("strategy 'lora' needs the model wrapped with LoRA adapters first (strategies.lora.apply_lora)")
    trained = list(range(1, len(layer_map)))
    return Stage("LoRA adapters + head", epochs, trained, {g: 1.0 for g in trained})


def _gradual(cfg: StrategyConfig, groups: list[int], epochs: int, scales) -> list[Stage]:
    """ULMFiT: head first, then one more group from the top every `unfreeze_every` epochs."""
    n = len(groups)  # the groups that may train, input side first
    limit = min(cfg.max_groups or n, n)
    stages, left, count = [], epochs, 1
    while left > 0:
        trainable = groups[n - count:]
        length = left if count == limit else min(cfg.unfreeze_every, left)
        name = "head only" if count == 1 else ("all groups" if count == n else f"top {count} groups")
        stages.append(Stage(name, length, trainable, scales(trainable)))
        left -= length
        count += 1
    return stages


def apply_stage(model: nn.Module, layer_map: LayerMap, stage: Stage) -> None:
    """Make exactly the stage's groups trainable (call on the unwrapped model, before prepare)."""
    trainable = {name for g in stage.trainable for name in layer_map.groups[g].param_names}
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)


def freeze_batch_norm(model: nn.Module) -> int:
    """Put batch-norm layers whose parameters are all frozen in eval mode; return how many.

    Call after `model.train()` at each epoch start: frozen BN then keeps its running statistics,
    which a few batches of new data would otherwise overwrite (timm and fastai do the same).
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if not any(p.requires_grad for p in params):
                module.eval()
                count += 1
    return count


def param_groups(model: nn.Module, layer_map: LayerMap, stage: Stage, lr: float,
                 weight_decay: float) -> list[dict]:
    """Optimizer groups for the stage: per layer group, decayed and non-decayed parameters.

    Biases and norm weights (1-D tensors) get no weight decay, as in BERT and timm.
    """
    params = dict(model.named_parameters())
    groups = []
    for index in stage.trainable:
        group = layer_map.groups[index]
        scale = stage.lr_scales[index]
        decayed = [params[n] for n in group.param_names if params[n].ndim > 1]
        plain = [params[n] for n in group.param_names if params[n].ndim <= 1]
        for tensors, decay in ((decayed, weight_decay), (plain, 0.0)):
            if tensors:
                groups.append({"params": tensors, "lr": lr * scale, "lr_scale": scale,
                               "weight_decay": decay, "layer_group": group.name})
    return groups
