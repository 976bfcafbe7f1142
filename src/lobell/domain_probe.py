"""How far the data lies from what the backbone was pre-trained on, measured before training.

A linear probe: the frozen backbone's pooled features (what the new head will read) of up to
`PROBE_EXAMPLES` training examples, and a logistic regression on them, scored by 3-fold
cross-validation. Its accuracy is put on a scale from the majority rate (0: the features say
nothing about the classes) to 1 (they separate them). Cheap: one forward pass over a few hundred
examples (about 1 s for MobileNetV2 at 64 px, a few seconds for MiniLM on 2 CPU cores).

Single-label classification only; other problems, models without `forward_features`, and models
whose weights are not loaded (`lobell recipe` builds them on the meta device) get no probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROBE_EXAMPLES = 256


@dataclass
class Probe:
    examples: int
    accuracy: float  # cross-validated linear-probe accuracy on the frozen features
    majority: float  # the commonest class's share among the probed examples
    gain: float  # (accuracy - majority) / (1 - majority): 0 = no better than the majority, 1 = perfect
    seconds: float


def linear_probe(cfg, splits, adapter) -> Probe | None:
    """The probe on a stratified sample of the training split, or None where it does not apply."""
    import time

    if adapter.modality not in ("text", "image") or splits.labels is None or splits.train.targets.ndim != 1:
        return None
    if not hasattr(adapter, "forward_features") or any(p.is_meta for p in adapter.model.parameters()):
        return None
    started = time.perf_counter()
    targets = splits.train.targets
    if len(np.unique(targets)) < 2 or np.bincount(targets).min() < 3:
        return None  # cross-validation needs every class in every fold
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(targets))
    if len(indices) > PROBE_EXAMPLES:
        indices, _ = train_test_split(indices, train_size=PROBE_EXAMPLES, stratify=targets, random_state=0)
    features = _features(cfg, splits.train.subset(np.sort(indices)), adapter)
    if features is None:
        return None
    probed = targets[np.sort(indices)]
    accuracy = _cross_validated(features, probed)
    majority = float(np.bincount(probed).max() / len(probed))
    gain = (accuracy - majority) / max(1.0 - majority, 1e-9)
    return Probe(len(probed), round(accuracy, 4), round(majority, 4), round(float(gain), 4),
                 round(time.perf_counter() - started, 2))


def _features(cfg, split, adapter) -> np.ndarray | None:
    """Pooled features in the split's order (eval mode, no gradients), or None if the model has no split."""
    import torch

    from lobell.tasks import build_dataset, build_loader

    model = adapter.model
    was_training = model.training
    model.eval()
    dataset = build_dataset(cfg, adapter, split)
    collate = build_loader(cfg.model_copy(update={"batch_size": 32}), adapter, dataset, train=False).collate_fn
    chunks = []
    try:
        with torch.inference_mode():
            for start in range(0, len(dataset), 32):
                batch = collate([dataset[i] for i in range(start, min(start + 32, len(dataset)))])
                chunks.append(adapter.forward_features(model, batch).float().flatten(1).cpu().numpy())
    except NotImplementedError:
        return None
    finally:
        model.train(was_training)
    return np.concatenate(chunks)


def _cross_validated(features: np.ndarray, targets: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.5))
    return float(np.mean(cross_val_score(probe, features, targets, cv=3)))
