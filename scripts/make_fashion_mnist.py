"""Rebuild src/lobell/assets/fashion_mnist/ from Debian's copy of Fashion-MNIST.

Run once by hand: `apt-get install -y dataset-fashion-mnist && python scripts/make_fashion_mnist.py`.
Draws a class-balanced subset with a fixed seed: train and validation from the official training
set (disjoint), test from the official test set, and stores it as one compressed .npz of uint8
28x28 images (a few MB), so the vision demo and tests need no download.
"""

import gzip
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
OUT = Path(__file__).resolve().parents[1] / "src/lobell/assets/fashion_mnist"
# Folder-safe class names in Fashion-MNIST's label order ("T-shirt/top" holds a slash).
CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
PER_CLASS = {"train": 400, "validation": 100, "test": 100}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian dimension sizes after a 4-byte magic number."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def balanced(labels: np.ndarray, per_class: int, rng: np.random.Generator, exclude=frozenset()) -> np.ndarray:
    picks = []
    for cls in range(len(CLASS_NAMES)):
        candidates = np.array([i for i in np.flatnonzero(labels == cls) if i not in exclude])
        picks.append(rng.choice(candidates, per_class, replace=False))
    return np.sort(np.concatenate(picks))


def main() -> None:
    rng = np.random.default_rng(0)
    train_images = read_idx(SOURCE / "train-images-idx3-ubyte.gz")
    train_labels = read_idx(SOURCE / "train-labels-idx1-ubyte.gz")
    test_images = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz")
    train = balanced(train_labels, PER_CLASS["train"], rng)
    validation = balanced(train_labels, PER_CLASS["validation"], rng, exclude=set(train.tolist()))
    test = balanced(test_labels, PER_CLASS["test"], rng)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT / "fashion_mnist_subset.npz", class_names=np.array(CLASS_NAMES),
        train_images=train_images[train], train_labels=train_labels[train],
        validation_images=train_images[validation], validation_labels=train_labels[validation],
        test_images=test_images[test], test_labels=test_labels[test])
    for name, index in [("train", train), ("validation", validation), ("test", test)]:
        print(name, len(index))
    target = OUT / "fashion_mnist_subset.npz"
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
