"""Shared by the benchmarks: each contender runs in a fresh child process (its own peak memory, no
warm caches from another contender), contenders alternate, and results print as a table."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "src" / "lobell" / "assets"


def parser(description: str) -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--quick", action="store_true", help="small sizes: checks the script, numbers mean little")
    args.add_argument("--repeats", type=int, default=1, help="rounds of all contenders, in alternating order")
    args.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one contender and print its JSON
    args.add_argument("--work", help=argparse.SUPPRESS)
    return args


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def work_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="lobell-bench-")


def run_contenders(script: str, names: list[str], repeats: int, work: str, extra: list[str]) -> list[dict]:
    """Run each contender `repeats` times in child processes, alternating the order every round."""
    results = []
    for round_ in range(repeats):
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            command = [sys.executable, script, "--child", name, "--work", work, *extra]
            print(f"[round {round_ + 1}] {name} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-4000:])
                raise SystemExit(f"contender {name} failed")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result.update(contender=name, round=round_ + 1, process_seconds=time.perf_counter() - started)
            print(f"    {json.dumps(result)}", file=sys.stderr, flush=True)
            results.append(result)
    return results


def child_output(result: dict) -> None:
    """A child's last stdout line: its result as JSON, with its peak memory."""
    result["peak_rss_mb"] = peak_rss_mb()
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


def table(results: list[dict], columns: list[tuple[str, str, str]], anchor: str | None = None,
          ratio_of: tuple[str, ...] = ()) -> str:
    """Median per contender of each column (key, header, format); ratios contender/anchor for `ratio_of`."""
    names = list(dict.fromkeys(r["contender"] for r in results))
    medians = {name: {key: _median([r[key] for r in results if r["contender"] == name and r.get(key) is not None])
                      for key, _, _ in columns} for name in names}
    lines = ["| contender | " + " | ".join(header for _, header, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name in names:
        cells = [fmt.format(medians[name][key]) if medians[name][key] is not None else "-" for key, _, fmt in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if anchor is not None:
        for name in names:
            if name == anchor:
                continue
            ratios = [f"{key} {medians[name][key] / medians[anchor][key]:.2f}x" for key in ratio_of
                      if medians[name][key] and medians[anchor][key]]
            lines.append(f"\n{name} / {anchor}: " + ", ".join(ratios))
    return "\n".join(lines)


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def machine() -> str:
    import platform

    import torch

    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, CPU bf16 {'yes' if bf16 else 'no (emulated)'}, "
            f"CUDA {'yes' if torch.cuda.is_available() else 'no'}")
