"""Vision fixtures: generated colour images in class folders and tables, tiny random backbones saved as weight files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Two classes that any backbone separates at once: reddish vs bluish noise.
COLOURS = {"red": (200, 40, 40), "blue": (40, 40, 200)}


def colour_image(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 32) -> Image.Image:
    pixels = np.clip(np.array(colour) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def make_class_folders(root: Path, per_class: int, seed: int = 0, size: int = 32) -> Path:
    """root/<colour>/<i>.png for each colour class."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour_image(colour, rng, size).save(root / name / f"{i}.png")
    return root


def make_image_table(root: Path, rows: list[dict], name: str = "data.csv", seed: int = 0) -> Path:
    """Images under root/images/ plus a table (CSV or JSONL by suffix) with paths relative to it.

    Each row gives `colour` (a COLOURS key) and any other columns to write (labels, targets).
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, row in enumerate(rows):
        relative = f"images/{Path(name).stem}_{i}.png"
        colour_image(COLOURS[row["colour"]], rng).save(root / relative)
        records.append({"image": relative, **{k: v for k, v in row.items() if k != "colour"}})
    frame = pd.DataFrame(records)
    path = root / name
    if path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False)
    return path


def save_random_weights(path: Path, library: str, arch: str, seed: int = 0, **kwargs) -> Path:
    """A randomly initialised backbone's state dict as a weights file (to exercise model_weights=PATH)."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    if library == "timm":
        import timm

        model = timm.create_model(arch, pretrained=False, **kwargs)
    else:
        import torchvision

        model = torchvision.models.get_model(arch, weights=None, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    else:
        torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def colour_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("colours")
    return {"train": make_class_folders(root / "train", 40, seed=1),
            "validation": make_class_folders(root / "validation", 10, seed=2)}


@pytest.fixture(scope="session")
def tiny_vit_weights(tmp_path_factory) -> Path:
    return save_random_weights(tmp_path_factory.mktemp("weights") / "test_vit.safetensors", "timm", "test_vit")


@pytest.fixture(scope="session")
def resnet18_weights(tmp_path_factory) -> Path:
    return save_random_weights(tmp_path_factory.mktemp("weights") / "resnet18.pth", "torchvision", "resnet18")


def image_overrides(train: Path, validation: Path, run_dir: Path, extra: dict | None = None) -> list[str]:
    """CLI-style overrides for a quick image run on the colour folders (32 px, fp32, AdamW, all groups)."""
    settings = {"task": "image-classification", "model": "timm/test_vit", "data.train": train,
                "data.validation": validation, "data.image_size": 32, "optimizer.name": "adamw",
                "optimizer.lr": 1e-3, "strategy": "full", "batch_size": 16,
                "epochs": 2, "precision": "fp32", "output_dir": run_dir, **(extra or {})}
    return [f"{key}={value}" for key, value in settings.items()]
