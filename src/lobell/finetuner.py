"""`FineTuner`: what every API model shares (layer map, freezing, training, prediction, saving).

Its own module so that `api` (text) and `vision_api` (images) both build on it without importing
each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lobell.config import Config, with_overrides
from lobell.data.splits import Split, Splits
from lobell.errors import LobellError
from lobell.problems import make_problem
from lobell.predict import Predictor
from lobell.strategies.plans import Stage, apply_stage, group_lr_scales
from lobell.tasks import parse_task


class FineTuner:
    """What every API model shares: the layer map, freezing, training and prediction.

    Freezing methods take effect at once (`requires_grad`) and make the next `train()` a single
    stage over exactly those groups; without them, `train()` follows `config.strategy`.
    """

    def __init__(self, config: Config, adapter, labels: list[str] | None):
        self.config = config
        self.adapter = adapter
        self.labels = labels
        self.modality, self.problem = parse_task(config.task)
        self._trainable: list[int] | None = None
        self.history: list[dict] = []

    # Layers: what trains.
    def layer_groups(self) -> list[dict]:
        """The layer map: index, name, parameter count and whether it trains now."""
        params = dict(self.adapter.model.named_parameters())
        return [{"index": i, "name": g.name, "params": sum(params[n].numel() for n in g.param_names),
                 "trainable": all(params[n].requires_grad for n in g.param_names)}
                for i, g in enumerate(self.adapter.layer_map.groups)]

    def freeze_backbone(self) -> None:
        """Train only the new head (feature extraction)."""
        self.freeze_to(len(self.adapter.layer_map) - 1)

    def unfreeze_all(self) -> None:
        """Train every group (full fine-tuning, pre-trained groups at their lower LR)."""
        self.freeze_to(0)

    def freeze_to(self, n: int) -> None:
        """Freeze every group below `n` (negative counts from the top, like fastai); train the rest."""
        count = len(self.adapter.layer_map)
        first = n + count if n < 0 else n
        if not 0 <= first < count:
            raise LobellError(f"freeze_to({n}): the model has {count} layer groups, so n must be in "
                              f"{-count}..{count - 1}")
        self._trainable = list(range(first, count))
        apply_stage(self.adapter.model, self.adapter.layer_map, self._stage(1))

    def _stage(self, epochs: int) -> Stage:
        groups = self._trainable
        scales = group_lr_scales(self.config.strategy, len(self.adapter.layer_map), groups)
        return Stage("head only" if len(groups) == 1 else f"top {len(groups)} groups", epochs, groups, scales)

    # Training.
    def _fit_splits(self, train: Split, validation: Split, epochs: int, settings: dict[str, Any]) -> dict:
        loss_fn = settings.pop("loss_fn", None)  # any callable (logits, targets) -> scalar tensor
        cfg = with_settings(self.config, {"epochs": epochs, **settings})
        splits = Splits(train, validation, None, self.labels, [], make_problem(self.problem, self.labels))
        plan = [self._stage(epochs)] if self._trainable is not None else None
        from lobell.training.runner import train as _train

        result = _train(cfg, splits=splits, adapter=self.adapter, plan=plan, quiet=bool(settings.get("quiet")),
                              loss_fn=loss_fn)
        self.config = cfg.model_copy(update={"output_dir": None})
        self.run_dir = result.run_dir
        self.history.append(result.metrics)
        return result.metrics

    # Prediction.
    def _predictor(self) -> Predictor:
        return Predictor(self.config, self.adapter, self.labels)

    def save(self, directory: str | Path) -> Path:
        """Write the model folder (loadable with plain transformers/timm code, see the model card)."""
        from lobell.run_dir import atomic_write_dir

        directory = Path(directory)
        atomic_write_dir(directory, lambda d: self.adapter.save(d, {"task": self.config.task, "labels": self.labels,
                                                                    "config": self.config.model_dump(mode="json")}))
        return directory



def with_settings(config: Config, settings: dict[str, Any]) -> Config:
    """A validated copy of `config` with `key=value` settings (`a__b` means `a.b`; `quiet` is not a key)."""
    return with_overrides(config, {key.replace("__", "."): value for key, value in settings.items() if key != "quiet"})


def restore_types(names: list[str]) -> list:
    return [int(n) if n.lstrip("-").isdigit() else n for n in names]


__all__ = ["FineTuner", "restore_types", "with_settings"]
