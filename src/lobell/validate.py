"""`lobell validate` and `lobell layers`: check a config and show the layer map without loading weights."""

from __future__ import annotations

import torch

from lobell.config import Config
from lobell.strategies.plans import build_plan
from lobell.tasks import build_adapter, load_task_splits, parse_task


def skeleton_adapter(cfg: Config, labels: list[str] | None):
    """The model's structure on the meta device: every shape, no weights read, no memory used."""
    modality, problem = parse_task(cfg.task)
    with torch.device("meta"):
        adapter = build_adapter(cfg, modality, problem, labels or ["a", "b"], weights=False)
        if cfg.strategy.name == "lora":  # the adapters' layer map: what the plan trains and `lobell layers` shows
            from lobell.strategies.lora import apply_lora

            apply_lora(adapter, cfg.lora, cfg.optimizer.name)
    return adapter


def validate_run_config(cfg: Config) -> list[str]:
    """Check keys, values, data files, columns, labels, model and freeze plan; return a summary."""
    from lobell.tracking import check_installed

    check_installed(cfg.tracking)
    lines = [f"config ok: task {cfg.task}, model {cfg.model}, strategy {cfg.strategy.name}"]
    labels = None
    if cfg.data.train is not None:
        splits = load_task_splits(cfg, *parse_task(cfg.task))
        labels = splits.labels
        sizes = f"train {len(splits.train)}, validation {len(splits.validation)}"
        if splits.test is not None:
            sizes += f", test {len(splits.test)}"
        lines.append(f"data ok: {sizes}" + (f"; {len(labels)} labels: {', '.join(labels[:10])}" if labels else ""))
        lines += [f"note: {note}" for note in splits.notes]
    adapter = skeleton_adapter(cfg, labels)
    plan = build_plan(cfg.strategy, adapter.layer_map, cfg.epochs)
    lines.append(f"model ok: {len(adapter.layer_map)} layer groups; plan: "
                 + "; ".join(f"{s.name} x{s.epochs} epoch(s)" for s in plan))
    return lines


def describe_layers(cfg: Config) -> str:
    """The layer map as a table: index, name, parameters, trainable in the plan's first stage."""
    adapter = skeleton_adapter(cfg, None)
    plan = build_plan(cfg.strategy, adapter.layer_map, cfg.epochs)
    first = set(plan[0].trainable)
    rows = [f"{adapter.layer_map.source}", f"{'#':>3}  {'group':<44} {'parameters':>12}  trainable (stage 1: {plan[0].name})"]
    for i, group in enumerate(adapter.layer_map.groups):
        rows.append(f"{i:>3}  {group.name:<44} {group.num_params(adapter.model):>12,}  {'yes' if i in first else 'never (frozen)' if group.frozen else 'no'}")
    return "\n".join(rows)


def describe_recipe(cfg: Config) -> str:
    """The six LO-BELL choices for this config and data, each with its reason (no weights loaded)."""
    from lobell import recipe
    from lobell.errors import LobellError

    modality, problem = parse_task(cfg.task)
    if cfg.data.train is None:
        raise LobellError("the recipe depends on the data: set data.train")
    splits = load_task_splits(cfg, modality, problem)
    adapter = skeleton_adapter(cfg, splits.labels)
    profile = recipe.profile_of(cfg, splits, adapter)
    return recipe.describe(recipe.decide(cfg, profile), profile)
