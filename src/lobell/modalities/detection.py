"""Detection data: COCO, YOLO or VOC files read to images with boxes, box-aware augmentation, list batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lobell.modalities.base import own_generator


class DetectionReader:
    """`read(path, input_column, label_column, problem)` for `predict`/`evaluate`: a detection data set
    (its images and, as raw targets, their samples) or a plain folder of images (no targets)."""

    def __init__(self, class_names: list[str] | None = None):
        self.class_names = class_names
        self.data = None

    def __call__(self, path, input_column: str, label_column, problem: str):
        import pandas as pd

        from lobell.data.detection import read_detection
        from lobell.data.image import image_files

        path = Path(path)
        if path.is_dir() and label_column is None and not _is_detection_folder(path):
            images = [str(p) for p in image_files(path)]
            return images, None, pd.DataFrame({input_column: images})
        self.data = read_detection(path, "test", class_names=self.class_names)
        images = [s.image for s in self.data.samples]
        return images, list(self.data.samples), pd.DataFrame({input_column: images})

    def notes(self) -> list[str]:
        return list(self.data.notes) if self.data is not None else []


def _is_detection_folder(path: Path) -> bool:
    from lobell.data.detection import detect_format
    from lobell.errors import LobellError

    try:
        detect_format(path)
    except LobellError:
        return False
    return True


class DetectionModality:
    name = "detection"
    find_unused_parameters = False

    def input_column(self, data) -> str:
        return data.image_column

    def reader(self, data):
        return DetectionReader()

    def load_splits(self, cfg):
        """Train, validation (a held-out share of train when unset) and test, class ids from training."""
        from lobell.data.detection.splits import load_detection_splits

        return load_detection_splits(cfg.data, cfg.seed)

    def build_adapter(self, cfg, problem: str, labels, weights: bool):
        from lobell.models.detection import DetectionAdapter

        return DetectionAdapter.from_pretrained(cfg.model, labels, backbone=cfg.backbone, weights=cfg.model_weights,
                                                backbone_weights=cfg.backbone_weights, image_size=cfg.data.image_size,
                                                load_weights=weights, fpn_channels=cfg.fpn_channels,
                                                train_stem=cfg.strategy.train_feature_encoder)

    def load_adapter(self, model_dir):
        from lobell.models.detection import DetectionAdapter

        return DetectionAdapter.load(model_dir)

    def dataset(self, data, adapter, split, max_length: int | None, reporter):
        from lobell.data.detection import DetectionDataset, detection_transform
        from lobell.data.detection.boxes import DetectionSample

        samples = [s if s.image else DetectionSample(path, s.boxes, s.labels, 0, 0)
                   for s, path in zip(split.targets, split.inputs)]  # prediction: the inputs, without boxes
        return DetectionDataset(samples, detection_transform("none", adapter.spec.min_size))

    def loader(self, cfg, adapter, dataset, train: bool, batch_size: int):
        """Training: augmented, reshuffled each epoch; evaluation: in order."""
        import torch
        from torch.utils.data import DataLoader

        from lobell.data.detection import detection_collate, detection_transform
        from lobell.data.image import ShuffledBatches

        workers = {"num_workers": cfg.data.num_workers, "persistent_workers": cfg.data.num_workers > 0,
                   "pin_memory": torch.cuda.is_available(), "generator": own_generator()}
        if not train:
            return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=detection_collate, **workers)
        augmented = dataset.with_transform(detection_transform(cfg.augment, adapter.spec.min_size))
        sampler = ShuffledBatches(len(dataset), batch_size, seed=cfg.seed)
        return DataLoader(augmented, batch_sampler=sampler, collate_fn=detection_collate, **workers)


def as_targets(samples: list) -> np.ndarray:
    return np.array(samples, dtype=object)
