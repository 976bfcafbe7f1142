"""Write the packaged Fashion-MNIST subset as files lobell reads, for examples/fashion_mnist_vision.yaml.

    python examples/fashion_mnist_vision.py

writes, under data/fashion_mnist/: train/, validation/ and test/ (one PNG folder per class), test.csv
(image paths relative to the CSV, and labels), and multi_label_train.csv / multi_label_validation.csv
whose label column holds each item's class and its garment group (e.g. `sneaker|footwear`).
"""

from pathlib import Path

import pandas as pd

from lobell.data.image import image_files, npz_image_folders

NPZ = Path(__file__).resolve().parents[1] / "src/lobell/assets/fashion_mnist/fashion_mnist_subset.npz"
OUT = Path("data/fashion_mnist")
GROUPS = {"t-shirt": "top", "pullover": "top", "coat": "top", "shirt": "top", "dress": "full-body",
          "trouser": "bottom", "sandal": "footwear", "sneaker": "footwear", "ankle-boot": "footwear",
          "bag": "accessory"}


def table(split: str, multi_label: bool) -> pd.DataFrame:
    rows = []
    for path in image_files(OUT / split):
        name = path.parent.name
        rows.append({"image": str(path.relative_to(OUT)), "label": f"{name}|{GROUPS[name]}" if multi_label else name})
    return pd.DataFrame(rows)


def main() -> None:
    npz_image_folders(NPZ, OUT)
    table("test", multi_label=False).to_csv(OUT / "test.csv", index=False)
    for split in ("train", "validation"):
        table(split, multi_label=True).to_csv(OUT / f"multi_label_{split}.csv", index=False)
    print(f"wrote {OUT}/: train/, validation/, test/ class folders; test.csv; multi_label_train.csv, "
          f"multi_label_validation.csv")


if __name__ == "__main__":
    main()
