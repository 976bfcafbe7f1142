"""A finished run's model as the server uses it: `lobell predict`'s Predictor, JSON-ready records out."""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path

import numpy as np

from lobell.errors import LobellError
from lobell.predict import Predictor

# The int8 check runs both models over at most this many of the run's validation examples: enough
# to see an accuracy change of a point, few enough to start in seconds.
QUANTIZE_CHECK_EXAMPLES = 1000


class ServedModel:
    """`Predictor` plus what a server needs: records with every probability, info, optional int8."""

    def __init__(self, predictor: Predictor, run_dir: Path, quantize: str | None = None):
        self.predictor, self.run_dir, self.quantize = predictor, Path(run_dir).resolve(), quantize
        self.quantization: dict | None = None  # the start-up check's numbers (int8 only)

    @classmethod
    def load(cls, run_dir: str | Path, quantize: str | None = None, check: bool = True) -> ServedModel:
        """The run's model; with `quantize="int8"` its Linear layers dynamically quantized, and (`check`)
        the accuracy change measured on the run's own validation predictions."""
        served = cls(Predictor.from_run(run_dir), Path(run_dir))
        if quantize is None:
            return served
        if quantize != "int8":
            raise LobellError(f"--quantize '{quantize}' is not supported; use --quantize int8")
        quantized = cls(_quantized_predictor(served.predictor), Path(run_dir), quantize)
        if check:
            quantized.quantization = measure_quantization(served, quantized)
        return quantized

    @property
    def modality(self) -> str:
        return self.predictor.modality

    @property
    def problem(self) -> str:
        return self.predictor.problem

    @property
    def sampling_rate(self) -> int | None:
        return getattr(self.predictor.adapter, "sampling_rate", None)

    def predict(self, inputs: list) -> list[dict]:
        """One record per input: `lobell predict`'s columns, plus `probabilities` by label where there are labels."""
        return self.records(self.predictor.logits(inputs))

    def records(self, logits: np.ndarray) -> list[dict]:
        task = self.predictor.task  # the run's problem (lobell.problems): `lobell predict`'s table, its probabilities
        rows = [{key: json_safe(value) for key, value in row.items()} for row in task.table(logits).to_dict("records")]
        if self.predictor.cfg.tasks is None and self.problem in ("classification", "multi-label"):
            names = self.predictor.labels
            for row, probs in zip(rows, task.probabilities(logits)):
                row["probabilities"] = {name: json_safe(float(p)) for name, p in zip(names, probs)}
        return rows

    def precision(self) -> str:
        """The numbers inference runs in: what `precision` resolves to here (as `lobell predict`), or int8."""
        if self.quantize:
            return "int8 (dynamic, Linear layers) with fp32 activations"
        from lobell.training.accelerator import resolve_precision

        resolved = resolve_precision(self.predictor.cfg.precision)
        return {"no": "fp32"}.get(resolved, resolved)

    def info(self) -> dict:
        """GET /info: task, labels, base model, the run's metrics, and how it is served."""
        cfg = self.predictor.cfg
        labels = self.predictor.labels
        if cfg.tasks is not None:
            labels = {task.name: task.labels for task in labels.tasks}
        return json_safe({
            "run_dir": str(self.run_dir), "task": cfg.task, "modality": self.modality, "problem": self.problem,
            "labels": labels, "base_model": _model_info(self.run_dir).get("base_model", cfg.model),
            "input_field": _field(self.modality), "precision": self.precision(), "configured_precision": cfg.precision,
            "quantization": self.quantization, "metrics": _metrics(self.run_dir)})


def _quantized_predictor(predictor: Predictor) -> Predictor:
    """A copy whose Linear layers run int8 (torch dynamic quantization); activations stay fp32, so no autocast."""
    import torch

    quantize_dynamic = getattr(getattr(torch, "ao", None), "quantization", None)
    quantize_dynamic = getattr(quantize_dynamic, "quantize_dynamic", None)
    if quantize_dynamic is None:
        raise LobellError(f"--quantize int8 needs torch.ao.quantization.quantize_dynamic, which torch "
                          f"{torch.__version__} no longer has; serve without --quantize")
    quantized = copy.copy(predictor)
    quantized.adapter = copy.copy(predictor.adapter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice: the API still works in this torch
        quantized.adapter.model = quantize_dynamic(copy.deepcopy(predictor.adapter.model).eval(), {torch.nn.Linear},
                                                   dtype=torch.qint8)
    quantized.cfg = predictor.cfg.model_copy(update={"precision": "fp32"})
    return quantized


def measure_quantization(full: ServedModel, quantized: ServedModel) -> dict:
    """Both models over the run's validation examples (predictions_validation.jsonl): each metric before and
    after, and how often the predictions agree. Where that cannot be done, a note says why."""
    inputs, targets, note = _validation_examples(full)
    if note:
        return {"examples": 0, "note": note}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference, changed = full.predictor.logits(inputs), quantized.predictor.logits(inputs)
    problem, metrics = full.problem, full.predictor.task.metrics
    before, after = metrics(reference, targets), metrics(changed, targets)
    result = {"examples": len(inputs), "metrics": {name: {"full": float(before[name]), "int8": float(after[name]),
                                                         "change": float(after[name] - before[name])}
                                                  for name in before if name in after and name != "loss"}}
    if problem == "classification":
        result["agreement"] = float((reference.argmax(1) == changed.argmax(1)).mean())
    elif problem == "multi-label":
        result["agreement"] = float(((reference >= 0) == (changed >= 0)).all(axis=1).mean())
    else:
        result["max_abs_difference"] = float(np.abs(reference - changed).max())
    return result


def describe_quantization(check: dict | None) -> str:
    """The start-up line for --quantize int8."""
    if not check or not check.get("examples"):
        return f"int8: accuracy change not measured: {(check or {}).get('note', 'no validation examples')}"
    changes = ", ".join(f"{name} {m['full']:.4f} -> {m['int8']:.4f} ({m['change']:+.4f})"
                        for name, m in check["metrics"].items())
    agree = (f"; predictions agree on {100 * check['agreement']:.1f}%" if "agreement" in check
             else f"; max output difference {check['max_abs_difference']:.3g}")
    return (f"int8 dynamic quantization of Linear layers, on {check['examples']} validation examples of the "
            f"run: {changes}{agree}")


def _validation_examples(served: ServedModel) -> tuple[list, np.ndarray, str | None]:
    from lobell.data.splits import TargetEncoder

    predictor, path = served.predictor, served.run_dir / "predictions_validation.jsonl"
    if predictor.cfg.tasks is not None or served.problem == "ctc":
        return [], np.array([]), f"not measured for {predictor.cfg.task} runs (one metric per task or per character)"
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = rows[:QUANTIZE_CHECK_EXAMPLES]
        inputs = [row["input"] for row in rows]
        raw = [row["target"] for row in rows]
        targets = TargetEncoder(served.problem, predictor.labels, "target").encode(raw, path)
    except (OSError, ValueError, KeyError, TypeError, LobellError) as exc:
        return [], np.array([]), f"{path.name} cannot be used ({exc})"
    if not rows:
        return [], np.array([]), f"{path.name} holds no examples"
    if served.modality != "text":
        missing = [item for item in inputs if not Path(item).is_file()]
        if missing:
            return [], np.array([]), f"validation file '{missing[0]}' is no longer there"
    return inputs, targets, None


def _model_info(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "model" / "lobell.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _metrics(run_dir: Path) -> dict | None:
    """metrics.json as the run wrote it (None when it is missing or unreadable: /info still answers)."""
    try:
        return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _field(modality: str) -> str:
    from lobell.serve.inputs import field_for

    return field_for(modality)


def json_safe(value):
    """numpy scalars -> Python numbers, NaN and infinities -> None (JSON has neither), in nested dicts and lists."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
