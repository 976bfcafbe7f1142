"""`precision: auto` decided by measurement: a few bf16 and fp32 training steps of this model on this device.

CPU flags do not say whether bf16 pays: without AVX-512 BF16/AMX it is emulated and slower than
fp32, and even with them some layers (convolutions on some CPUs) run slower in bf16. So the run
times a few steps of the heaviest stage in each precision (inside trial.sandbox: weights, flags and
RNGs are left exactly as they were) and picks bf16 only when it is clearly faster. The result is
cached per machine and model in ~/.cache/lobell/precision.json ($LOBELL_CACHE_DIR overrides the
folder), so later runs of the same model on the same machine start at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list

from lobell.errors import LobellError
from lobell.run_dir import add_json_section, atomic_write_json
from lobell.training import trial

# bf16 must take at most this fraction of fp32's step time: a smaller gain is within a busy
# machine's step-to-step noise (a few percent here), and bf16 gives up precision for it.
MARGIN = 0.9
# Per precision and round: a few steps after one warm-up, more while they take under `seconds`.
PROBE_STEPS = {"min_steps": 3, "max_steps": 10, "seconds": 0.5}
ROUNDS = 2  # fp32, bf16, fp32, bf16: a load change on a shared machine hits both alike


@dataclass
class PrecisionProbe:
    """What `precision: auto` chose and from what (recipe.json's `precision`)."""

    choice: str  # Accelerate's name: "bf16", or "no" (fp32)
    reason: str
    fp32_step_seconds: float | None = None
    bf16_step_seconds: float | None = None
    cached: bool = False
    key: str = ""


def wants_probe(precision: str, device: torch.device) -> bool:
    """Only `auto` is measured, and only where bf16 autocast can run at all (GPUs without bf16 get fp16)."""
    if precision != "auto":
        return False
    return device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())


def probe_precision(adapter, stage, cfg, loader, loss_fn, accelerator, measure=None) -> PrecisionProbe:
    """The main process measures (or reads the cache) and decides; every process gets the same answer.

    `measure(adapter, stage, cfg, loader, loss_fn, device) -> (fp32 seconds, bf16 seconds)` per step
    (tests inject fake timings)."""
    box = [_probe(adapter, stage, cfg, loader, loss_fn, accelerator.device, measure or measure_steps)
           if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(box)
    return box[0]


def _probe(adapter, stage, cfg, loader, loss_fn, device, measure) -> PrecisionProbe:
    key = probe_key(adapter, stage, cfg, device)
    known = read_cache().get(key)
    if known is not None:
        return PrecisionProbe(**{**known, "cached": True, "key": key})
    fp32, bf16 = measure(adapter, stage, cfg, loader, loss_fn, device)
    probe = decide(fp32, bf16, key)
    write_cache(key, probe)
    return probe


def decide(fp32_seconds: float, bf16_seconds: float, key: str = "") -> PrecisionProbe:
    """bf16 when its step takes at most MARGIN x fp32's, else fp32; the reason gives both times."""
    ratio = bf16_seconds / fp32_seconds
    faster = ratio <= MARGIN
    times = f"bf16 {bf16_seconds * 1e3:.1f} ms vs fp32 {fp32_seconds * 1e3:.1f} ms per step ({ratio:.2f}x)"
    reason = (f"{times}: bf16 is at least {1 - MARGIN:.0%} faster here" if faster else
              f"{times}: bf16 is not at least {1 - MARGIN:.0%} faster here, so fp32")
    return PrecisionProbe("bf16" if faster else "no", reason, round(fp32_seconds, 6), round(bf16_seconds, 6),
                          False, key)


def measure_steps(adapter, stage, cfg, loader, loss_fn, device) -> tuple[float, float]:
    """Median seconds per training step in fp32 and in bf16 autocast, the best of ROUNDS alternating rounds."""
    best = {"no": float("inf"), "bf16": float("inf")}
    for _ in range(ROUNDS):
        for precision in best:
            timed = trial.time_steps(adapter, stage, cfg, loader, loss_fn, _Autocast(device, precision),
                                     **PROBE_STEPS)
            best[precision] = min(best[precision], timed["step_seconds"])
    return best["no"], best["bf16"]


class _Autocast:
    """The two things trial.time_steps asks of an accelerator, in a given precision."""

    def __init__(self, device: torch.device, precision: str):
        self.device, self.precision = device, precision

    def autocast(self):
        if self.precision == "no":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def probe_key(adapter, stage, cfg, device: torch.device) -> str:
    """Machine (device name, threads), torch version, model family and shape, batch and input size."""
    model = adapter.model
    params = sum(p.numel() for p in model.parameters())
    trained = len(stage.trainable)
    inputs = f"max_length {cfg.data.max_length}, image_size {cfg.data.image_size}"
    return (f"{device_name(device)} | torch {torch.__version__} | {type(model).__name__} {params} params, "
            f"{trained}/{len(adapter.layer_map)} groups trained | batch {cfg.batch_size}, {inputs}")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model_name()}, {torch.get_num_threads()} threads"


def cpu_model_name() -> str:
    """`lscpu`'s "Model name" (from /proc/cpuinfo), or what the platform says elsewhere."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cache_path() -> Path:
    root = os.environ.get("LOBELL_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lobell"
    return Path(root) / "precision.json"


def read_cache() -> dict:
    """key -> probe fields; an unreadable cache counts as empty (it is measured again)."""
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(key: str, probe: PrecisionProbe) -> None:
    entry = {k: v for k, v in asdict(probe).items() if k not in ("cached", "key")}
    with contextlib.suppress(OSError, LobellError):  # a read-only or full home only costs the next run a probe
        atomic_write_json(cache_path(), {**read_cache(), key: entry})


def choose_precision(cfg, accelerator, adapter, loader, loss_fn, stage, reporter, run_dir: Path,
                     resumed: bool) -> PrecisionProbe | None:
    """`precision: auto` for this run: measured (or cached), switched on `accelerator`, logged and
    written to recipe.json. A resumed run keeps the precision it started with. None: nothing to decide."""
    from lobell.training.accelerator import set_precision

    if not wants_probe(cfg.precision, accelerator.device):
        return None
    probe = started_with(run_dir) if resumed else None
    probe = probe or probe_precision(adapter, stage, cfg, loader, loss_fn, accelerator)
    set_precision(accelerator, probe.choice)
    source = "resumed run" if resumed else "cached probe" if probe.cached else "probe"
    reporter.log(f"precision=auto: {'bf16' if probe.choice == 'bf16' else 'fp32'} ({source}: {probe.reason})")
    if accelerator.is_main_process:
        add_json_section(run_dir / "recipe.json", "precision", asdict(probe))
    return probe


def started_with(run_dir: Path) -> PrecisionProbe | None:
    """The precision recipe.json recorded when this run started, if it did."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        return PrecisionProbe(**json.loads((Path(run_dir) / "recipe.json").read_text())["precision"])
    return None
