"""Frozen-feature caching: while only the head trains, the frozen backbone runs once per example.

A head-only stage (feature-extraction; the first stage of two-stage and gradual) would run the
whole backbone every epoch to train a few thousand head parameters. Instead the adapter's
`forward_features` runs once per training and validation example, in eval mode as frozen layers are
(batch norm keeps its statistics, dropout is off), and the stage's epochs run `forward_head` on the
stored features in the training loader's own batch order. The features are keyed by model, frozen
weights, data and preprocessing; inputs that change every epoch (augmentation, mixup) turn the
cache off, and the log says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lobell.console import Reporter
from lobell.models.base import has_feature_split
from lobell.strategies.plans import Stage

# forward_head(forward_features(x)) must reproduce forward(x) this closely (relative to the logits'
# scale) on the first batch before any epoch trusts the split; bf16/fp16 rounding needs more room.
_SPLIT_TOLERANCE = {"no": 1e-4, "bf16": 5e-2, "fp16": 1e-2}
_CHECK_EXAMPLES = 4  # examples of the first validation batch that the split check runs on


@dataclass
class CachedStage:
    """What a head-only stage trains and evaluates on instead of the backbone's inputs."""

    adapter: HeadOnly  # forward(model, batch) runs the head on batch["features"]
    loaders: dict[str, DataLoader]  # "train" (the training loader's batch order), "validation"


@dataclass
class _Stats:
    examples: int = 0
    build_seconds: float = 0.0
    from_disk: bool = False
    epoch_seconds: list[float] = field(default_factory=list)


class HeadOnly:
    """The adapter contract over cached features: `forward` runs the model's head alone."""

    def __init__(self, adapter, accelerator):
        self.adapter, self.accelerator = adapter, accelerator
        self.modality, self.layer_map = adapter.modality, adapter.layer_map

    def forward(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # accelerate puts autocast around the whole model's forward; the head alone needs its own.
        with self.accelerator.autocast():
            return self.adapter.forward_head(self.accelerator.unwrap_model(model), batch["features"])


class FeatureCache:
    """Builds, keeps and serves head inputs for the run's head-only stages (see the module docstring)."""

    def __init__(self, adapter, datasets: dict, eval_loaders: dict, train_batches, accelerator,
                 reporter: Reporter, *, off: str | None = None, directory: Path | None = None):
        self.adapter, self.datasets, self.eval_loaders = adapter, datasets, eval_loaders
        self.train_batches = train_batches  # the training loader's batch sampler: the same order per epoch
        self.accelerator, self.reporter, self.off, self.directory = accelerator, reporter, off, directory
        self.store: dict[str, _Features] | None = None
        self.stats = _Stats()
        self._said_off = False

    def for_stage(self, stage: Stage, model) -> CachedStage | None:
        """Cached features and loaders when `stage` trains exactly the head, else None (the log says why)."""
        if stage.trainable != [len(self.adapter.layer_map) - 1]:
            self.store = None  # the backbone trains from here on: the features no longer hold
            return None
        if self.store is None and self.off is None:
            self.store = self._build(self.accelerator.unwrap_model(model))
        if self.store is None:
            if not self._said_off:
                self.reporter.log(f"feature cache off: {self.off}")
                self._said_off = True
            return None
        from lobell.tasks import own_generator  # as the run's loaders: no draw from the global RNG

        prepare, common = self.accelerator.prepare, {"collate_fn": _as_batch, "generator": own_generator()}
        eval_batch_size = self.eval_loaders["validation"].batch_sampler.batch_size  # text's sampler has one too
        loaders = {"train": prepare(DataLoader(self.store["train"], batch_sampler=self.train_batches, **common)),
                   "validation": prepare(DataLoader(self.store["validation"], batch_size=eval_batch_size, **common))}
        return CachedStage(HeadOnly(self.adapter, self.accelerator), loaders)

    def record_epoch(self, seconds: float) -> None:
        """A cached epoch's training time (the first one is logged next to the cache's build time)."""
        self.stats.epoch_seconds.append(seconds)
        if len(self.stats.epoch_seconds) == 1:
            self.reporter.log(f"feature cache: head-only epochs now take ~{seconds:.2f} s (building the cache, "
                              f"one backbone pass, took {self.stats.build_seconds:.1f} s)")

    def summary(self) -> dict:
        """Timing keys for metrics.json (empty when no stage used the cache)."""
        if not self.stats.examples:
            return {}
        epochs = self.stats.epoch_seconds
        return {"feature_cache_examples": self.stats.examples, "feature_cache_seconds": self.stats.build_seconds,
                "feature_cache_from_disk": self.stats.from_disk, "cached_epochs": len(epochs),
                "cached_epoch_seconds": sum(epochs) / len(epochs) if epochs else None}

    def _build(self, model) -> dict[str, _Features] | None:
        start = time.perf_counter()
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        precision = self.accelerator.mixed_precision
        reason = check_split(self.adapter, model, self._first_validation_batch(), precision, self.accelerator)
        if reason is not None:
            self.off = reason
            return None
        cached_splits = {name: self.datasets[name] for name in ("train", "validation")}
        key = cache_key(self.adapter, model, trainable, cached_splits, precision) if self.directory else None
        path = self.directory / f"features-{key}.pt" if key else None
        store = _load(path) if path is not None and path.is_file() else None
        self.stats.from_disk = store is not None
        if store is None:
            store = {name: self._compute(model, name) for name in ("train", "validation")}
            if path is not None:
                _save(path, store)
        self.stats.examples = sum(len(s) for s in store.values())
        self.stats.build_seconds = time.perf_counter() - start
        where = f"read from {path}" if self.stats.from_disk else "computed"
        self.reporter.log(f"feature cache: {len(store['train']):,} training and {len(store['validation']):,} "
                          f"validation examples {where} in {self.stats.build_seconds:.1f} s; head-only epochs "
                          f"train the head on them")
        return store

    def _compute(self, model, name: str) -> _Features:
        """One pass of the frozen part over split `name`: eval mode, the run's precision, no gradients."""
        model.eval()
        device, size = self.accelerator.device, len(self.datasets[name])
        features = targets = None
        batches = self.reporter.track(self.eval_loaders[name], f"caching {name} features")
        with torch.no_grad(), self.accelerator.autocast():
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                out = self.adapter.forward_features(model, batch).float().cpu()
                if features is None:
                    features = torch.empty((size, *out.shape[1:]))
                    targets = torch.empty((size, *batch["targets"].shape[1:]), dtype=batch["targets"].dtype)
                index = batch["index"].cpu()
                features[index], targets[index] = out, batch["targets"].cpu()
        return _Features(features, targets)

    def _first_validation_batch(self) -> dict[str, torch.Tensor]:
        batch = next(iter(self.eval_loaders["validation"]))
        return {k: v[:_CHECK_EXAMPLES].to(self.accelerator.device) for k, v in batch.items()}


def build_feature_cache(cfg, adapter, datasets: dict, train_batches, accelerator, reporter: Reporter) -> FeatureCache:
    """The run's feature cache; `off` says why it cannot serve any stage (checked before any stage)."""
    from lobell.tasks import build_loader

    eval_loaders = {name: build_loader(cfg, adapter, datasets[name], train=False) for name in ("train", "validation")}
    return FeatureCache(adapter, datasets, eval_loaders, train_batches, accelerator, reporter,
                        off=reason_off(cfg, adapter, accelerator.num_processes), directory=cfg.speed.feature_cache_dir)


def reason_off(cfg, adapter, num_processes: int) -> str | None:
    """Why this run's inputs or setup rule caching out, or None where head-only stages may use it."""
    if not cfg.speed.cache_features:
        return "speed.cache_features=false"
    if not has_feature_split(adapter):
        return f"the {adapter.modality} adapter has no feature/head split"
    if adapter.modality == "image" and cfg.augment != "none":
        return f"augment '{cfg.augment}' changes the inputs every epoch (augment=none allows caching)"
    if cfg.mixup.mixup_alpha > 0 or cfg.mixup.cutmix_alpha > 0:
        return "mixup/cutmix changes the inputs every epoch"
    if num_processes > 1:
        return f"{num_processes} processes (the cache serves single-process runs)"
    batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in adapter.model.modules())
    if cfg.strategy.train_bn and batch_norm:
        return "strategy.train_bn=true updates frozen batch-norm statistics at every step"
    return None


def check_split(adapter, model, batch: dict[str, torch.Tensor], precision: str, accelerator) -> str | None:
    """Why the adapter's feature/head split does not fit this stage, or None when it does.

    It fits when no trainable parameter feeds the features, every trainable parameter is reached
    from them, and forward_head(forward_features(x)) equals forward(x) in eval mode.
    """
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    model.eval()
    try:
        with torch.enable_grad(), accelerator.autocast():
            features = adapter.forward_features(model, batch)
            if features.requires_grad:
                return "a trainable layer sits before the head's input"
            logits = adapter.forward_head(model, features).float()
            grads = torch.autograd.grad(logits.sum(), [p for _, p in trainable], allow_unused=True)
    except NotImplementedError as exc:
        return str(exc)
    except (AttributeError, TypeError, KeyError, IndexError, RuntimeError) as exc:  # a head built differently
        return f"the feature/head split does not fit this model ({type(exc).__name__}: {str(exc)[:200]})"
    outside = [name for (name, _), grad in zip(trainable, grads) if grad is None]
    if outside:
        return f"trainable parameter {outside[0]} is outside the head's part of the model"
    with torch.no_grad(), accelerator.autocast():
        expected = adapter.forward(model, batch).float()
    error = (logits.detach() - expected).abs().max().item()
    if error > _SPLIT_TOLERANCE.get(precision, 1e-2) * (1 + expected.abs().max().item()):
        return f"the head split does not reproduce the model's output (max difference {error:.2e})"
    return None


def cache_key(adapter, model, trainable: set[str], datasets: dict, precision: str) -> str:
    """A digest of what the features depend on: model, frozen weights and buffers, inputs, preprocessing."""
    digest = hashlib.blake2b(digest_size=16)
    preprocessing = getattr(adapter, "preprocessing", None)
    digest.update(json.dumps({"model": adapter.name, "class": type(model).__name__, "head": sorted(trainable),
                              "precision": precision,
                              "preprocessing": preprocessing.to_dict() if preprocessing is not None else None},
                             sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        if name not in trainable:
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for name in sorted(datasets):
        digest.update(name.encode())
        _digest_dataset(digest, datasets[name])
    return digest.hexdigest()


def _digest_dataset(digest, dataset) -> None:
    """Inputs as the model sees them: token ids (tokenizer and max_length included), or image files
    (path, size, modification time) and arrays with the transform that turns them into pixels."""
    digest.update(np.asarray(dataset.targets).tobytes())
    if hasattr(dataset, "input_ids"):
        digest.update(str(dataset.max_length).encode())
        for ids in dataset.input_ids:
            digest.update(np.asarray(ids, dtype=np.int64).tobytes() + b"|")
        return
    digest.update(repr(dataset.transform).encode())
    for item in dataset.inputs:
        if isinstance(item, (str, os.PathLike)):
            stat = os.stat(item)
            digest.update(f"{item}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
        elif isinstance(item, torch.Tensor):
            digest.update(item.detach().cpu().contiguous().numpy().tobytes())
        elif hasattr(item, "tobytes"):  # numpy arrays and PIL images
            digest.update(f"{getattr(item, 'mode', '')}{getattr(item, 'size', '')}".encode() + item.tobytes())
        else:
            digest.update(repr(item).encode())


class _Features(Dataset):
    """Cached features and targets by dataset index; a batch is fetched in one indexing step."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor):
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict:
        return {"features": self.features[index], "targets": self.targets[index], "index": index}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return {"features": self.features[index], "targets": self.targets[index], "index": index}


def _as_batch(batch: dict) -> dict:
    return batch


def _save(path: Path, store: dict[str, _Features]) -> None:
    """Write atomically (temp file, then rename): a reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({name: {"features": s.features, "targets": s.targets} for name, s in store.items()}, tmp)
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, _Features]:
    data = torch.load(path, weights_only=True)
    return {name: _Features(d["features"], d["targets"]) for name, d in data.items()}
