"""The Python front door: a few lines to fine-tune, over the same engine as the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lobell.config import validate_config
from lobell.data.splits import Split, TargetEncoder
from lobell.data.tables import split_train_validation
from lobell.errors import LobellError
from lobell.finetuner import FineTuner, restore_types, with_settings
from lobell.tasks import build_adapter


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
        config = with_settings(validate_config({"task": "text-classification", "model": model_name}), settings)
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
        self._label_values = restore_types(info["labels"])
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


class BERTFineTuner(TextClassifier):
    """The notes' name for the text fine-tuner, with their signature; everything else is `TextClassifier`.

    Example (as the notes wrote it):
        tuner = BERTFineTuner(model_name="sentence-transformers/all-MiniLM-L6-v2", num_classes=2)
        train_data, val_data = tuner.prepare_data(texts, labels)
        tuner.train(train_data, val_data, num_epochs=3)
        tuner.predict(["a gripping, beautifully acted film"])
    """


__all__ = ["BERTFineTuner", "FineTuner", "TextClassifier", "load"]
