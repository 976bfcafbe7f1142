"""Detection splits: each data.* path read in its format, class ids fixed by the training split."""

from __future__ import annotations

import numpy as np

from lobell.data.detection.formats import read_detection
from lobell.errors import LobellError


def load_detection_splits(cfg, seed: int):
    """Splits whose inputs are image paths and whose targets are DetectionSamples (an object array)."""
    from lobell.data.splits import Splits
    from lobell.data.tables import split_train_validation
    from lobell.problems import make_problem

    if cfg.train is None:
        raise LobellError("no training data: set data.train to a COCO .json, a YOLO data.yaml or a VOC folder")
    train_data = read_detection(cfg.train, "train")
    names, notes = train_data.class_names, list(train_data.notes)
    train = _split(train_data, str(cfg.train))
    validation_path = cfg.validation if cfg.validation is not None else _yaml_split(cfg.train, "validation")
    if validation_path is not None:
        data = read_detection(validation_path, "validation", class_names=names)
        notes += data.notes
        validation = _split(data, str(validation_path))
    else:
        train_idx, val_idx = split_train_validation(len(train), None, cfg.val_fraction, seed,
                                                    source=f"data file '{cfg.train}'")
        validation, train = train.subset(val_idx), train.subset(train_idx)
        validation.source = f"{cfg.train} (held-out {cfg.val_fraction:.0%})"
        notes.append(f"validation: {len(validation)} images held out of {cfg.train} (seed {seed})")
    test = None
    if cfg.test is not None:
        data = read_detection(cfg.test, "test", class_names=names)
        notes += data.notes
        test = _split(data, str(cfg.test))
    if cfg.max_train_samples and len(train) > cfg.max_train_samples:
        keep = np.sort(np.random.default_rng(seed).permutation(len(train))[: cfg.max_train_samples])
        train = train.subset(keep)
        notes.append(f"train: {len(train)} images kept (data.max_train_samples)")
    return Splits(train, validation, test, names, notes, make_problem("detection", names))


def _split(data, source: str):
    from lobell.data.splits import Split

    return Split([s.image for s in data.samples], np.array(data.samples, dtype=object), source)


def _yaml_split(train_path, split: str):
    """A YOLO data.yaml given as data.train also names its validation split."""
    from pathlib import Path

    path = Path(train_path)
    if path.suffix.lower() in (".yaml", ".yml"):
        from lobell.data.detection.yolo import SPLIT_KEYS, read_data_yaml

        spec = read_data_yaml(path)
        if any(spec.get(k) for k in SPLIT_KEYS[split]):
            return path
    return None
