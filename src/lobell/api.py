"""The Python front door: a few lines to fine-tune, over the same engine as the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lobell.config import Config, validate_config
from lobell.data.splits import Split, Splits, TargetEncoder
from lobell.data.tables import split_train_validation
from lobell.errors import LobellError
from lobell.predict import Predictor
from lobell.strategies.plans import Stage, apply_stage, group_lr_scales
from lobell.tasks import build_adapter, parse_task
from lobell.train.runner import train as run_training


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
        cfg = _with_settings(self.config, {"epochs": epochs, **settings})
        splits = Splits(train, validation, None, self.labels, [])
        plan = [self._stage(epochs)] if self._trainable is not None else None
        result = run_training(cfg, splits=splits, adapter=self.adapter, plan=plan, quiet=bool(settings.get("quiet")),
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


class TextClassifier(FineTuner):
    """Fine-tune a BERT-like encoder for text classification in a few lines.

    Example:
        clf = TextClassifier("sentence-transformers/all-MiniLM-L6-v2", num_classes=2)
        clf.fit(train_texts, train_labels, val_texts, val_labels, epochs=3)
        clf.predict(["a gripping, beautifully acted film"])
    """

    def __init__(self, model_name: str = "sentence-transformers/all-MiniLM-L6-v2", num_classes: int = 2, *,
                 labels: list | None = None, **settings: Any):
        """
        Args:
            model_name: hub name or local folder of a transformers encoder.
            num_classes: number of classes (ignored when `labels` is given).
            labels: the class names in the order of the model's outputs.
            **settings: any config key, dotted keys written with `__` (e.g. `optimizer__lr=3e-5`,
                `strategy="gradual"`, `batch_size=16`, `output_dir="runs/mine"`).
        """
        label_values = list(labels) if labels is not None else list(range(num_classes))
        names = [str(v) for v in label_values]
        config = _with_settings(validate_config({"task": "text-classification", "model": model_name}), settings)
        adapter = build_adapter(config, "text", "classification", names)
        super().__init__(config, adapter, names)
        self._label_values = label_values

    def prepare_data(self, texts: list[str], labels: list, val_fraction: float = 0.1) -> tuple[Split, Split]:
        """Encode labels and hold out a stratified validation split: (train, validation)."""
        split = self._split(texts, labels)
        train_idx, val_idx = split_train_validation(len(split), split.targets, val_fraction, self.config.seed)
        return split.subset(train_idx), split.subset(val_idx)

    def train(self, train_data: Split, val_data: Split, num_epochs: int = 3, **settings: Any) -> dict:
        """Fine-tune on prepared data; returns {"before", "validation", ...} metrics."""
        return self._fit_splits(train_data, val_data, num_epochs, settings)

    def fit(self, train_texts: list[str], train_labels: list, val_texts: list[str] | None = None,
            val_labels: list | None = None, epochs: int = 3, **settings: Any) -> dict:
        """Fine-tune on texts and labels; without validation data, 10% of train is held out."""
        if val_texts is None:
            train, validation = self.prepare_data(train_texts, train_labels)
        else:
            train, validation = self._split(train_texts, train_labels), self._split(val_texts, val_labels)
        return self.train(train, validation, epochs, **settings)

    def predict(self, texts: list[str], return_probabilities: bool = False):
        """Predicted labels (as given at construction), and their class probabilities on request."""
        predictor = self._predictor()
        from lobell.evaluate import probabilities

        probs = probabilities(predictor.logits(list(texts)), "classification")
        predicted = [self._label_values[i] for i in probs.argmax(axis=1)]
        return (predicted, probs) if return_probabilities else predicted

    @classmethod
    def load(cls, directory: str | Path) -> TextClassifier:
        """Reload a folder written by `save()` or a run's `model/` folder."""
        from lobell.tasks import load_adapter

        directory = Path(directory)
        info = json.loads((directory / "lobell.json").read_text())
        config = validate_config(info.get("config") or {"task": info.get("task", "text-classification")})
        self = cls.__new__(cls)
        FineTuner.__init__(self, config, load_adapter(directory, "text"), info["labels"])  # also lora.merge: false
        self._label_values = _restore_types(info["labels"])
        return self

    def _split(self, texts: list[str], labels: list) -> Split:
        if len(texts) != len(labels):
            raise LobellError(f"{len(texts)} texts but {len(labels)} labels: they must pair up one to one")
        index = {str(v): str(v) for v in self._label_values}
        unknown = sorted({str(v) for v in labels} - set(index))
        if unknown:
            raise LobellError(f"label(s) {unknown[:5]} are not among this classifier's labels {self.labels}; "
                              f"pass labels=[...] when creating it")
        targets = TargetEncoder("classification", self.labels, "labels").encode([str(v) for v in labels], "labels")
        return Split(list(texts), targets, "python")


def load(directory: str | Path):
    """Load any saved lobell model folder with the right API class."""
    info = json.loads((Path(directory) / "lobell.json").read_text())
    if info.get("modality") == "text":
        return TextClassifier.load(directory)
    from lobell.vision_api import TransferLearningModel

    return TransferLearningModel.load(directory)


def _with_settings(config: Config, settings: dict[str, Any]) -> Config:
    """A validated copy of `config` with `key=value` settings (`a__b` means `a.b`)."""
    raw = config.model_dump(mode="json", exclude_unset=True)  # keeps which keys the user set
    for key, value in settings.items():
        if key == "quiet":
            continue
        node = raw
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if parts[-1] in ("strategy", "optimizer", "scheduler", "loss") and isinstance(value, str):
            node.setdefault(parts[-1], {})["name"] = value
        else:
            node[parts[-1]] = value
    return validate_config(raw, source="settings")


def _restore_types(names: list[str]) -> list:
    return [int(n) if n.lstrip("-").isdigit() else n for n in names]


__all__ = ["FineTuner", "TextClassifier", "load"]
