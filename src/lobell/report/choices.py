"""The run's six LO-BELL choices as rows (choice, setting, why): from recipe.json, else config.yaml."""

from __future__ import annotations

from typing import Any

from lobell.report.run_files import RunFiles

# Why each strategy, from docs/strategies.md (shown when no recipe.json says more).
STRATEGY_WHY = {
    "full": "pre-trained groups train at backbone_lr_scale x the head LR: the randomly initialised head learns "
            "faster than the encoder it sits on",
    "feature-extraction": "the right choice for small data or a backbone whose features already fit",
    "gradual": "unfreezing from the top protects the general low-level features while the head settles",
    "discriminative": "lower groups hold more general features: their LR falls by lr_decay per group from the head",
    "two-stage": "the new head stops sending large random gradients into the backbone before the backbone trains",
}
_AUTO_LOSS = {"classification": "cross-entropy", "multi-label": "bce (binary cross-entropy per label)",
              "regression": "mse"}


def recipe_rows(run: RunFiles) -> tuple[list[tuple[str, str, str]], str]:
    """(choice, setting, why) rows and where they came from ('recipe.json' or 'config.yaml')."""
    if run.recipe is not None:
        rows = _from_recipe(run.recipe)
        if rows:
            return rows, "recipe.json"
    return _from_config(run), "config.yaml"


def _from_recipe(recipe: Any) -> list[tuple[str, str, str]]:
    """lobell.recipe's {"choices": [{name, values, reason, source}, ...]}; other shapes best effort."""
    body = recipe.get("choices", recipe) if isinstance(recipe, dict) else recipe
    items = list(body.items()) if isinstance(body, dict) else list(enumerate(body or []))
    rows = []
    for key, value in items:
        if not isinstance(value, dict):
            rows.append((str(key), _text(value), ""))
            continue
        name = str(value.get("name") or value.get("choice") or key)
        values = value.get("values", value.get("value", value.get("setting")))
        setting = ", ".join(f"{k}={v}" for k, v in values.items()) if isinstance(values, dict) else _text(values)
        if value.get("source"):
            setting += f" [{value['source']}]"
        rows.append((name, setting, _text(value.get("reason", value.get("why", "")))))
    return rows


def recipe_profile(run: RunFiles) -> str | None:
    """What the recipe decided from (recipe.json's profile), in one line."""
    profile = run.recipe.get("profile") if isinstance(run.recipe, dict) else None
    if not isinstance(profile, dict):
        return None
    parts = [f"{profile.get('params', 0):,}-parameter {profile.get('family', 'model')}",
             f"{profile.get('modality')} {profile.get('problem')}", f"{profile.get('n_train', '?'):,} training examples"
             if isinstance(profile.get("n_train"), int) else "training examples unknown"]
    if profile.get("n_classes"):
        parts.append(f"{profile['n_classes']} classes (imbalance {profile.get('imbalance', 1.0):.1f}x)")
    if profile.get("median_length"):
        parts.append(f"median {profile['median_length']:.0f} tokens")
    return "decided from: " + ", ".join(parts)


def _from_config(run: RunFiles) -> list[tuple[str, str, str]]:
    cfg = run.config
    if not cfg:
        return []
    strategy, optimizer = cfg.get("strategy") or {}, cfg.get("optimizer") or {}
    scheduler, loss, stopping = cfg.get("scheduler") or {}, cfg.get("loss") or {}, cfg.get("early_stopping") or {}
    name = strategy.get("name", "full")
    head = cfg.get("head")
    head_text = (f"new head: hidden {head.get('hidden')}, dropout {head.get('dropout')}, "
                 f"batch norm {head.get('batch_norm')}, {head.get('activation')}" if isinstance(head, dict)
                 else "new output layer in place of the pre-trained one")
    loss_name = loss.get("name", "auto")
    if loss_name == "auto":
        loss_name = f"auto = {_AUTO_LOSS.get(run.problem, 'by task')}"
    rows = [
        ("layers", f"strategy {name} ({_strategy_details(name, strategy)}); {head_text}",
         STRATEGY_WHY.get(name, "")),
        ("optimizer", _optimizer_text(optimizer, cfg.get("max_grad_norm")),
         "decoupled weight decay, never on biases and norms (BERT, timm)"),
        ("batch size", f"{cfg.get('batch_size')} (evaluation {cfg.get('eval_batch_size') or 'twice that'})",
         "16-32 is the BERT paper's range"),
        ("epochs", (f"{cfg.get('epochs')} at most; early stopping on {stopping.get('monitor')} with patience "
                    f"{stopping.get('patience')}; trained {run.epochs_trained}, best epoch "
                    f"{run.metrics.get('best_epoch', '?')}"), "the best epoch's weights are kept"),
        ("loss", (f"{loss_name}, label smoothing {loss.get('label_smoothing', 0.0)}, class weights "
                  f"{loss.get('class_weights', 'none')}"), "the task's standard loss"),
        ("learning rate", (f"{optimizer.get('lr')} for the new head, pre-trained groups scaled per stage "
                           f"(stages.json); {scheduler.get('name', 'linear')} schedule, warmup "
                           f"{scheduler.get('warmup_ratio', 0.0):.0%}"), "warmup keeps the first steps gentle"),
    ]
    return rows


def _strategy_details(name: str, strategy: dict) -> str:
    keys = {"full": ("backbone_lr_scale", "lr_decay"), "gradual": ("unfreeze_every", "max_groups", "backbone_lr_scale"),
            "discriminative": ("lr_decay",), "two-stage": ("frozen_epochs", "unfrozen_lr_factor"),
            "feature-extraction": ()}.get(name, tuple(strategy))
    details = [f"{key} {strategy[key]}" for key in keys if strategy.get(key) is not None]
    return ", ".join(details) if details else "head only"


def _optimizer_text(optimizer: dict, max_grad_norm: Any) -> str:
    name = optimizer.get("name", "adamw")
    parts = [f"{name}, weight decay {optimizer.get('weight_decay')}"]
    if name in ("sgd", "rmsprop"):
        parts.append(f"momentum {optimizer.get('momentum')}" + (", nesterov" if optimizer.get("nesterov") else ""))
    parts.append(f"gradients clipped at norm {max_grad_norm}" if max_grad_norm else "no gradient clipping")
    return "; ".join(parts)


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def stage_rows(run: RunFiles) -> list[tuple]:
    """One row per freeze stage: name, epochs, groups training, their LR range, parameters training."""
    rows = []
    for stage in run.stages:
        lrs = [v for v in (stage.get("lrs") or {}).values() if isinstance(v, (int, float))]
        span = f"{min(lrs):.2e} - {max(lrs):.2e}" if lrs and min(lrs) != max(lrs) else (f"{lrs[0]:.2e}" if lrs else "")
        groups = stage.get("trainable_groups") or []
        rows.append((stage.get("name", ""), f"{stage.get('first_epoch')}-{stage.get('last_epoch')}",
                     f"{len(groups)}: {', '.join(groups[:3])}{' ...' if len(groups) > 3 else ''}", span,
                     stage.get("trainable_params")))
    return rows


__all__ = ["STRATEGY_WHY", "recipe_profile", "recipe_rows", "stage_rows"]
