"""How close lobell's MiniLM training gets to the machine's limit: measured matrix-multiply peak in
the run's precision vs achieved training FLOP/s (6 x non-embedding parameters x tokens, encoders).

    python bench/limit.py           # the full run (docs/benchmarks.md; ~2-3 minutes on 2 cores)
    python bench/limit.py --quick   # checks the script in under a minute; its numbers mean little

Tokens are the real (unpadded) tokens lobell trained on, so padding counts as waste, and attention's
own FLOPs (small at these lengths) are left out: the fraction is a lower bound. On a CPU without
AVX-512 BF16/AMX, `precision: auto` trains in fp32 (bf16 is emulated and slower there), so the
fp32 peak is the limit that applies; the bf16 matmul rate is printed too, for the record.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import _common

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SIZES = {"full": {"matmul": 2048, "repeats": 10, "train": 1500}, "quick": {"matmul": 1024, "repeats": 3, "train": 160}}


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    sizes = SIZES["quick" if args.quick else "full"]
    import torch

    print(_common.machine(), file=sys.stderr)
    emulated = not torch.ops.mkldnn._is_mkldnn_bf16_supported()  # ~100x slower: a smaller, shorter measurement
    bf16_size, bf16_repeats = (1024, 2) if emulated else (sizes["matmul"], sizes["repeats"])
    peaks = {"fp32": matmul_peak(torch.float32, sizes["matmul"], sizes["repeats"]),
             "bf16": matmul_peak(torch.bfloat16, bf16_size, bf16_repeats)}
    with _common.work_dir() as work:
        run = train_minilm(Path(work), sizes["train"])
    precision = "bf16" if run["precision"] == "bf16" else "fp32"
    fraction = run["flops_per_second"] / peaks[precision]
    print(json.dumps({"matmul_gflops": {k: v / 1e9 for k, v in peaks.items()}, **run}, indent=2), file=sys.stderr)
    print(f"| measure | value |\n|---|---|\n"
          f"| matmul peak fp32 ({sizes['matmul']}^2, {torch.get_num_threads()} threads) | "
          f"{peaks['fp32'] / 1e9:.0f} GFLOP/s |\n"
          f"| matmul peak bf16 | {peaks['bf16'] / 1e9:.0f} GFLOP/s"
          f"{' (emulated: this CPU has no bf16 units)' if emulated else ''} |\n"
          f"| lobell training precision | {run['precision']} |\n"
          f"| MiniLM non-embedding parameters | {run['non_embedding_parameters'] / 1e6:.2f} M |\n"
          f"| training tokens/s (unpadded) | {run['tokens_per_second']:.0f} |\n"
          f"| achieved training FLOP/s (6 N tokens/s) | {run['flops_per_second'] / 1e9:.1f} GFLOP/s |\n"
          f"| fraction of the {precision} matmul peak | {fraction:.0%} |")
    if precision == "fp32":
        print("\nThis CPU has no bf16 units, so lobell trains in fp32 and the fp32 peak is the limit that "
              "applies; the goal's bf16 limit cannot be measured here.")
    print(f"goal (>= 50% of the {precision} limit): {'met' if fraction >= 0.5 else 'NOT met'} ({fraction:.0%})")


def matmul_peak(dtype, size: int, repeats: int) -> float:
    """The best FLOP/s of `repeats` square matmuls (2 n^3 FLOPs each) after a warm-up."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best


def train_minilm(work: Path, examples: int) -> dict:
    """One epoch of full fine-tuning (every parameter trains, so 6N holds) with lobell's defaults."""
    import pandas as pd
    from safetensors.torch import load_file

    from lobell.config import load_config
    from lobell.training.runner import train

    frame = pd.read_csv(_common.ASSETS / "rotten_tomatoes" / "train.csv").sample(n=examples, random_state=0)
    frame.to_csv(work / "train.csv", index=False)
    validation = pd.read_csv(_common.ASSETS / "rotten_tomatoes" / "validation.csv").head(100)
    validation.to_csv(work / "validation.csv", index=False)
    cfg = load_config(None, ["task=text-classification", f"model={MINILM}", f"data.train={work / 'train.csv'}",
                             f"data.validation={work / 'validation.csv'}", "strategy=full", "epochs=1",
                             "batch_size=32", f"output_dir={work / 'run'}"])
    result = train(cfg, quiet=True)
    timing = result.metrics["timing"]
    weights = load_file(result.run_dir / "model" / "model.safetensors")
    non_embedding = sum(t.numel() for name, t in weights.items() if ".embeddings." not in name)
    tokens_per_second = timing["train_tokens_per_second"]
    return {"precision": _precision(result.run_dir), "non_embedding_parameters": non_embedding,
            "tokens_per_second": tokens_per_second, "train_seconds": timing["train_seconds"],
            "samples_per_second": timing["train_samples_per_second"],
            "flops_per_second": 6 * non_embedding * tokens_per_second}


def _precision(run_dir: Path) -> str:
    """The precision the run resolved `auto` to (the runner logs it; recomputed the same way here)."""
    import yaml

    from lobell.training.runner import resolve_precision

    setting = yaml.safe_load((run_dir / "config.yaml").read_text())["precision"]
    resolved = resolve_precision(setting)
    return "fp32" if resolved == "no" else resolved


if __name__ == "__main__":
    main()
