"""`TransferLearningModel`: fine-tune an ImageNet backbone (torchvision or timm) in a few lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lobell.finetuner import FineTuner, restore_types, with_settings
from lobell.config import validate_config
from lobell.data.image import ImageReader, image_files
from lobell.data.splits import Split, TargetEncoder
from lobell.data.tables import LabelSpace, split_train_validation
from lobell.errors import LobellError
from lobell.evaluate import compute_metrics, probabilities
from lobell.tasks import build_adapter


class TransferLearningModel(FineTuner):
    """An image classifier on a pre-trained backbone, with the source notes' API.

    Example:
        model = TransferLearningModel("resnet18", num_classes=10, pretrained=True)
        model.freeze_backbone()
        model.train("data/train", "data/val", num_epochs=3)  # only the new head trains
        model.unfreeze_all()
        model.train("data/train", "data/val", num_epochs=2)
        model.predict(["photo.jpg"])
    """

    def __init__(self, model_name: str = "resnet18", num_classes: int = 10, pretrained: bool = True, *,
                 labels: list | None = None, **settings: Any):
        """
        Args:
            model_name: `torchvision/<arch>`, `timm/<arch>` or a bare name (torchvision's if it has it).
            num_classes: number of classes (ignored when `labels` is given).
            pretrained: False starts from random weights (baselines; fine-tuning wants True).
            labels: the class names in output order; without them, the class names of the first
                training data are adopted (when their number is `num_classes`).
            **settings: any config key, dotted keys written with `__` (e.g. `optimizer__lr=1e-3`,
                `data__image_size=64`, `model_weights="resnet18.pth"`, `head={"hidden": [512]}`).
        """
        label_values = list(labels) if labels is not None else list(range(num_classes))
        names = [str(v) for v in label_values]
        base = {"task": "image-classification", "model": model_name}
        if not pretrained:
            base["model_weights"] = "random"
        config = with_settings(validate_config(base), settings)
        adapter = build_adapter(config, "image", "classification", names)
        super().__init__(config, adapter, names)
        self._label_values = label_values
        self._labels_fixed = labels is not None

    def train(self, train_data, val_data=None, num_epochs: int = 10, **settings: Any) -> dict:
        """Fine-tune; returns {"before", "validation", ...} metrics.

        Args:
            train_data: a folder of class folders, a CSV/JSONL of image paths and labels, or a list
                of (image, label) pairs where an image is a path, a PIL image or a tensor.
            val_data: the same kinds; None holds out 10% of `train_data` (stratified).
            num_epochs: epochs of this call (freezing set before it applies to all of them).
        """
        inputs, raw = self._read(train_data)
        self._adopt_labels(raw)
        train = self._split(inputs, raw, train_data)
        if val_data is None:
            train_idx, val_idx = split_train_validation(len(train), train.targets, self.config.data.val_fraction,
                                                        self.config.seed)
            train, validation = train.subset(train_idx), train.subset(val_idx)
        else:
            validation = self._split(*self._read(val_data), val_data)
        return self._fit_splits(train, validation, num_epochs, settings)

    def predict(self, images, return_probabilities: bool = False):
        """Predicted labels for images (paths, a folder, PIL images or tensors), in order."""
        probs = probabilities(self._predictor().logits(self._images(images)), "classification")
        predicted = [self._label_values[i] for i in probs.argmax(axis=1)]
        return (predicted, probs) if return_probabilities else predicted

    def evaluate(self, data) -> dict[str, float]:
        """Accuracy and macro-F1 on labelled data (the kinds `train` accepts)."""
        inputs, raw = self._read(data)
        split = self._split(inputs, raw, data)
        metrics = compute_metrics(self._predictor().logits(split.inputs), split.targets, "classification", self.labels)
        return {**metrics, "examples": len(split)}

    @classmethod
    def load(cls, directory: str | Path) -> TransferLearningModel:
        """Reload a folder written by `save()` or a run's `model/` folder."""
        from lobell.models.vision import VisionAdapter

        directory = Path(directory)
        info = json.loads((directory / "lobell.json").read_text())
        config = validate_config(info.get("config") or {"task": info.get("task", "image-classification"),
                                                        "model": info.get("base_model", "resnet18")})
        self = cls.__new__(cls)
        FineTuner.__init__(self, config, VisionAdapter.load(directory), info["labels"])
        self._label_values = restore_types(info["labels"])
        self._labels_fixed = True
        return self

    def _read(self, data) -> tuple[list, list]:
        """(images, raw labels) from a folder, a table file, or (image, label) pairs."""
        reader = ImageReader(skip_bad=self.config.data.skip_bad_images)
        if isinstance(data, (str, Path)):
            inputs, raw, _ = reader(Path(data), self.config.data.image_column, self.config.data.label_column,
                                    "classification")
            return inputs, [str(v) for v in raw]
        pairs = list(data)
        if not pairs or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
            raise LobellError("training data must be a folder, a CSV/JSONL file, or a non-empty list of "
                              "(image, label) pairs")
        path_rows = [i for i, (image, _) in enumerate(pairs) if isinstance(image, (str, Path))]
        paths = [str(pairs[i][0]) for i in path_rows]
        readable = reader.readable(paths, "the (image, label) pairs") if paths else []
        dropped = set(path_rows) - {path_rows[j] for j in readable}
        rows = [i for i in range(len(pairs)) if i not in dropped]
        return [pairs[i][0] for i in rows], [str(pairs[i][1]) for i in rows]

    def _adopt_labels(self, raw: list[str]) -> None:
        """Take the data's class names when none were given and the default 0..n-1 names do not fit."""
        if self._labels_fixed or set(raw) <= set(self.labels):
            return
        names = LabelSpace.from_values(raw).names
        if len(names) != len(self.labels):
            raise LobellError(f"the training data has {len(names)} classes ({', '.join(names[:10])}) but the model "
                              f"was built for num_classes={len(self.labels)}")
        self.labels, self._label_values = names, names
        self._labels_fixed = True

    def _split(self, inputs: list, raw: list[str], source) -> Split:
        unknown = sorted(set(raw) - set(self.labels))
        if unknown:
            raise LobellError(f"label(s) {unknown[:5]} are not among this model's labels {self.labels[:10]}; "
                              f"pass labels=[...] when creating it")
        return Split(inputs, TargetEncoder("classification", self.labels, "label").encode(raw, str(source)),
                     str(source) if isinstance(source, (str, Path)) else "python")

    def _images(self, images) -> list:
        if isinstance(images, (str, Path)) and Path(images).is_dir():
            return [str(p) for p in image_files(Path(images))]
        single = (isinstance(images, (str, Path, Image.Image, np.ndarray))
                  or (isinstance(images, torch.Tensor) and images.ndim <= 3))
        return [images] if single else list(images)


__all__ = ["TransferLearningModel"]
