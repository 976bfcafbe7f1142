"""Does `pretrain:` (masked-LM on the domain's texts first) help a MiniLM classifier on Rotten Tomatoes?

Same classifier budget in both arms (the recipe's choices, `epochs`, data); the pretrain arm first
runs masked-LM on the labelled training texts plus unlabeled RT snippets (the rest of the packaged
RT training split, labels dropped). Results: docs/benchmarks.md, "pretrain: masked-LM first".

    python bench/pretrain_rt.py --seeds 0 1 --train 500 --extra 1500 --epochs 3 --pretrain-epochs 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _suite_data import _rotten, _write_csvs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--extra", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pretrain-epochs", type=int, default=1)
    parser.add_argument("--pretrain-lr", type=float, default=5e-5)
    parser.add_argument("--arms", nargs="+", default=["baseline", "pretrain"])
    parser.add_argument("--out", type=Path, default=Path("bench/results/pretrain_rt.json"))
    args = parser.parse_args()

    from lobell.config import load_config
    from lobell.models.hub import PACKAGED, package_dir
    from lobell.models.masked_lm import MaskedLMAdapter
    from lobell.training.runner import train

    package, sub, _ = PACKAGED["sentence-transformers/all-MiniLM-L6-v2"]
    model = str(package_dir(package) / sub)
    head = MaskedLMAdapter.from_pretrained(model)
    print("MiniLM as AutoModelForMaskedLM, weights the checkpoint lacks:", head.new_params, flush=True)
    root = Path(tempfile.mkdtemp(prefix="pretrain_rt_"))
    pool = _rotten("train").sample(frac=1.0, random_state=0)
    frames = {"train": pool.iloc[:args.train], "validation": _rotten("validation").sample(n=300, random_state=0),
              "test": _rotten("test").sample(n=800, random_state=0)}
    files = _write_csvs(root, frames)
    extra = root / "extra.txt"
    extra.write_text("\n".join(pool.iloc[args.train:args.train + args.extra]["text"].astype(str)) + "\n")
    rows = []
    for seed in args.seeds:
        for arm in args.arms:
            overrides = [f"model={model}", f"data.train={files['train']}", f"data.validation={files['validation']}",
                         f"data.test={files['test']}", f"epochs={args.epochs}", f"seed={seed}", "data.max_length=64",
                         f"output_dir={root / f'{arm}-{seed}'}"]
            if arm == "pretrain":
                overrides += [f"pretrain.extra_text={extra}", f"pretrain.epochs={args.pretrain_epochs}",
                              f"pretrain.lr={args.pretrain_lr}"]
            started = time.perf_counter()
            metrics = train(load_config(None, overrides), quiet=True).metrics
            row = {"arm": arm, "seed": seed, "test_accuracy": metrics["test"]["accuracy"],
                   "validation_accuracy": metrics["validation"]["accuracy"], "seconds": time.perf_counter() - started}
            if arm == "pretrain":
                row.update({k: metrics["pretrain"][k] for k in ("perplexity_before", "perplexity_after")})
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    print(table.groupby("arm")[["test_accuracy", "validation_accuracy", "seconds"]].agg(["mean", "std"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
