"""A head-only sweep of 8 trials vs 1 trial on real MiniLM-L6: what sharing the feature cache saves.

    python bench/sweep.py           # docs/benchmarks.md (~3 minutes on 2 busy cores)
    python bench/sweep.py --quick   # checks the script; its numbers mean little

Both contenders run `lobell sweep` (lobell.sweep.sweep, as the command does) on Rotten Tomatoes
(train and validation only: trials are compared on validation) with strategy=feature-extraction,
3 epochs, AdamW, batch 32, fp32 (so no precision probe, cached or not, differs between the two). "1-trial" runs one grid point; "8-trials" all eight learning rates. Each
runs in a fresh child process with a fresh sweep folder, so the first trial of each computes the
frozen backbone's features and the later trials read them from SWEEP/feature-cache. Wall time covers
the whole sweep: reading data, loading the model per trial, training, evaluation, each run's report.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import _common

CONTENDERS = ["1-trial", "8-trials"]
SIZES = {"full": (1000, 300), "quick": (100, 50)}
LRS = "3e-4,1e-3,2e-3,3e-3,5e-3,1e-2,2e-2,3e-2"


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    if args.child:
        settings = json.loads((Path(args.work) / "settings.json").read_text())
        return _common.child_output(run_sweep(settings, 1 if args.child == "1-trial" else 8))
    with _common.work_dir() as work:
        settings = prepare(Path(work), SIZES["quick" if args.quick else "full"])
        print(f"{_common.machine()}\nsettings: {json.dumps(settings)}", file=sys.stderr)
        results = _common.run_contenders(__file__, CONTENDERS, args.repeats, work, [])
    print(_common.table(results, [("wall_seconds", "wall time (s)", "{:.1f}"),
                                  ("cache_seconds", "first trial's cache build (s)", "{:.1f}"),
                                  ("best_accuracy", "best validation accuracy", "{:.4f}")],
                        anchor="1-trial", ratio_of=("wall_seconds",)))


def prepare(work: Path, sizes: tuple[int, int]) -> dict:
    import pandas as pd

    files = {}
    for split, count in zip(("train", "validation"), sizes):
        frame = pd.read_csv(_common.ASSETS / "rotten_tomatoes" / f"{split}.csv")
        files[split] = str(work / f"{split}.csv")
        frame.sample(n=min(count, len(frame)), random_state=0).to_csv(files[split], index=False)
    settings = {"texts": files, "work": str(work)}
    (work / "settings.json").write_text(json.dumps(settings))
    return settings


def run_sweep(settings: dict, trials: int) -> dict:
    from lobell.sweep import sweep

    files = settings["texts"]
    items = ["task=text-classification", "model=sentence-transformers/all-MiniLM-L6-v2",
             f"data.train={files['train']}", f"data.validation={files['validation']}",
             "strategy=feature-extraction", "epochs=3", "early_stopping.patience=null", "recipe=false",
             "optimizer.name=adamw", "scheduler=cosine", "scheduler.warmup_ratio=0", "batch_size=32", "precision=fp32",
             f"output_dir={settings['work']}/sweep-{trials}-{time.time_ns()}", f"optimizer.lr={LRS}"]
    started = time.perf_counter()
    result = sweep(None, items, trials=trials, quiet=True)
    wall = time.perf_counter() - started
    first = json.loads((Path(result.summary["trials"][0]["run_dir"]) / "metrics.json").read_text())
    return {"wall_seconds": wall, "trials": len(result.summary["trials"]),
            "cache_seconds": first["timing"].get("feature_cache_seconds"),
            "best_accuracy": result.summary["best"]["value"],
            "from_disk": [json.loads((Path(t["run_dir"]) / "metrics.json").read_text())["timing"]
                          .get("feature_cache_from_disk") for t in result.summary["trials"]]}


if __name__ == "__main__":
    main()
