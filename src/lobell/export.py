"""`lobell export`: a finished run's model as ONNX (checked against PyTorch) or as bare safetensors weights.

Modality-generic: the model is called through its adapter's `forward(model, batch)`, and the ONNX
inputs are whatever tensors the run's own collator puts in a batch (`input_ids`/`attention_mask`
for text, `pixel_values` for images), built from a few of the run's real validation inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lobell.errors import LobellError

FORMATS = ("onnx", "safetensors")
CHECK_INPUTS = 8  # real inputs run through both runtimes
ATOL, RTOL = 1e-4, 1e-3  # fp32 kernels differ in summation order; 1e-4 is far below any decision boundary
NOT_MODEL_INPUTS = ("targets", "index")  # batch keys the collators add for training and gathering
EXTRA_DYNAMIC_AXES = {"text": {1: "sequence"}}  # besides axis 0 (batch) of every input
EXTERNAL_DATA_BYTES = 1_800_000_000  # a single ONNX protobuf cannot exceed 2 GB: weights go beside it


@dataclass
class ExportResult:
    path: Path
    max_abs_difference: float | None = None  # ONNX only: onnxruntime vs PyTorch
    inputs_checked: int = 0  # distinct real inputs, checked in batches of several sizes
    dynamic_axes: tuple[str, ...] = ()


def export_run(run_dir: str | Path, fmt: str, output: str | Path | None = None) -> ExportResult:
    """Write the run's model in `fmt` to `output` (default RUN_DIR/export/model.<fmt>), atomically.

    Raises:
        LobellError: unknown format, unfinished run, missing export packages, a failed export, or
            ONNX outputs that differ from PyTorch's beyond tolerance (then nothing is written).
    """
    from lobell.predict import Predictor

    if fmt not in FORMATS:
        raise LobellError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    path = Path(output) if output is not None else run_dir / "export" / f"model.{fmt}"
    predictor = Predictor.from_run(run_dir)
    model = predictor.adapter.model.float().eval().to("cpu")
    if fmt == "safetensors":
        write_safetensors(model, path, _metadata(run_dir))
        return ExportResult(path)
    _require_onnx_packages()
    inputs = real_inputs(run_dir, predictor)
    batches = example_batches(predictor, inputs)
    forward = AdapterForward(predictor.adapter, model, [k for k in batches[0] if k not in NOT_MODEL_INPUTS])
    axes = EXTRA_DYNAMIC_AXES.get(predictor.modality, {})
    with _staging(path) as staged:
        write_onnx(forward, batches[0], axes, staged)
        difference = max_difference(staged, forward, batches[1:])
    names = ("batch", *axes.values())
    return ExportResult(path, difference, len(inputs), names)


class AdapterForward(nn.Module):
    """The adapter's `forward(model, batch)` as a module of positional tensors, which export needs."""

    def __init__(self, adapter, model: nn.Module, names: list[str]):
        super().__init__()
        self.adapter, self.model, self.names = adapter, model, list(names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.adapter.forward(self.model, dict(zip(self.names, tensors)))

    def inputs(self, batch: dict) -> tuple[torch.Tensor, ...]:
        return tuple(batch[name] for name in self.names)


def write_onnx(forward: AdapterForward, batch: dict, extra_axes: dict[int, str], path: Path) -> None:
    """Export with torch.export (the dynamo exporter): axis 0 of every input is `batch`, plus `extra_axes`."""
    tensors = forward.inputs(batch)
    batch_dim = torch.export.Dim("batch")
    extra = {axis: torch.export.Dim(name) for axis, name in extra_axes.items()}
    shapes = tuple({0: batch_dim, **{a: d for a, d in extra.items() if a < t.ndim}} for t in tensors)
    big = sum(p.numel() * p.element_size() for p in forward.parameters()) > EXTERNAL_DATA_BYTES
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*axis name.*will not be used.*")
        try:
            program = torch.onnx.export(forward.eval(), tensors, None, input_names=forward.names,
                                        output_names=["logits"], dynamic_shapes=(shapes,), dynamo=True,
                                        verbose=False, external_data=big)
        except Exception as exc:
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise LobellError(f"ONNX export failed: {first} (run with --debug for the traceback)") from exc
    program.save(str(path), external_data=big)


def max_difference(path: Path, forward: AdapterForward, batches: list[dict]) -> float:
    """Largest |onnxruntime - PyTorch| over `batches`; raises when beyond ATOL + RTOL x |PyTorch|."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in batches:
        with torch.no_grad():
            expected = forward(*forward.inputs(batch)).float().numpy()
        feeds = {name: tensor.numpy() for name, tensor in zip(forward.names, forward.inputs(batch))}
        actual = session.run(["logits"], feeds)[0]
        if actual.shape != expected.shape:
            raise LobellError(f"ONNX output shape {actual.shape} differs from PyTorch's {expected.shape}")
        gap = np.abs(actual - expected)
        worst = max(worst, float(gap.max(initial=0.0)))
        if not np.all(gap <= ATOL + RTOL * np.abs(expected)):
            raise LobellError(f"ONNX outputs differ from PyTorch's by up to {worst:.2e} (tolerance {ATOL:g} + "
                              f"{RTOL:g} x |value|); the model was not written")
    return worst


def real_inputs(run_dir: Path, predictor, count: int = CHECK_INPUTS) -> list:
    """The first `count` inputs of the run's validation predictions, else of its data files."""
    from lobell.report.run_files import load_run

    inputs = [row["input"] for row in load_run(run_dir).predictions if "input" in row]
    if predictor.modality == "image":
        inputs = [item for item in inputs if Path(item).is_file()]
    if len(inputs) < count:
        inputs += _inputs_from_data(predictor, count - len(inputs))
    if not inputs:
        raise LobellError(f"run folder '{run_dir}' has no validation predictions and its data files cannot be "
                          f"read: export needs a few real inputs to check the ONNX model")
    while len(inputs) < 3:  # one example batch and two checks of other shapes
        inputs = inputs + inputs
    return inputs[:count]


def _inputs_from_data(predictor, count: int) -> list:
    from lobell.tasks import data_reader

    data = predictor.cfg.data
    read = data_reader(predictor.cfg, predictor.modality)
    for path in (data.validation, data.test, data.train):
        if path is not None and Path(path).exists():
            inputs, _, _ = read(Path(path), predictor.input_column(), None, predictor.problem)
            return list(inputs[:count])
    return []


def example_batches(predictor, inputs: list) -> list[dict]:
    """Batches exactly as the run's collator makes them: 2 examples to trace, then checks of other sizes."""
    from lobell.data.splits import Split
    from lobell.tasks import build_dataset, build_loader

    width = len(predictor.labels or [None])
    targets = (np.zeros((len(inputs), width), dtype=np.float32) if predictor.problem == "multi-label" else
               np.zeros(len(inputs), dtype=np.int64 if predictor.problem == "classification" else np.float32))
    dataset = build_dataset(predictor.cfg, predictor.adapter, Split(list(inputs), targets, "export"))
    collate = build_loader(predictor.cfg, predictor.adapter, dataset, train=False).collate_fn
    groups = [range(2), range(2, min(5, len(inputs))), range(len(inputs))]
    return [collate([dataset[i] for i in group]) for group in groups if len(group)]


def write_safetensors(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Every weight of the fine-tuned model (backbone and new head) in one file; shared tensors copied."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        key = tensor.untyped_storage().data_ptr()
        tensors[name] = tensor.clone() if key in seen else tensor  # safetensors refuses shared storage
        seen.add(key)
    with _staging(path) as staged:
        save_file(tensors, str(staged), metadata=metadata)


def _metadata(run_dir: Path) -> dict[str, str]:
    info_path = run_dir / "model" / "lobell.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    keep = {k: info[k] for k in ("modality", "task", "labels", "base_model") if k in info}
    return {"format": "pt", "lobell": json.dumps(keep)}


def _require_onnx_packages() -> None:
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise LobellError(f"--format onnx needs {', '.join(missing)}: pip install \"lobell[export]\"")


class _staging:
    """A temporary folder beside `path`: the export is written there under its final name (external
    data files keep the names the model refers to), then moved in, the main file last."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"))
        return self.folder / self.path.name

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:
                main = self.folder / self.path.name
                for item in sorted(self.folder.iterdir(), key=lambda p: p == main):
                    os.replace(item, self.path.parent / item.name)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


__all__ = [
    "FORMATS",
    "AdapterForward",
    "ExportResult",
    "export_run",
    "max_difference",
    "write_onnx",
    "write_safetensors",
]
