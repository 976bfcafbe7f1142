"""Knowledge distillation: a fine-tuned teacher's outputs, computed once per training example, as soft targets.

The teacher is any finished lobell model (a run folder or its model/ folder; for text also a
fine-tuned transformers classifier). It reads the same examples through its own preprocessing
(`tasks.build_dataset`), so text, image and any later modality work alike, and its outputs are
cached by example index (the loaders' `batch["index"]`) before training, like frozen features.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lobell.config import Config, DistillConfig
from lobell.errors import LobellError
from lobell.evaluate import compute_metrics
from lobell.resolve import eval_batch_size
from lobell.tasks import build_dataset, build_loader, load_adapter, parse_task
from lobell.training.loop import predict_logits

DISTILLATION = "distillation.json"


@dataclass
class Teacher:
    """The teacher's cached training outputs (student label order, row = example index) and its scores."""

    source: str
    model: str  # its base model
    params: int
    train_logits: torch.Tensor
    scores: dict = field(default_factory=dict)  # {"validation": metrics, "test": metrics, "samples_per_second": x}


@dataclass
class _Loaded:
    adapter: object
    cfg: Config  # the teacher's own preprocessing settings (its run's config, else the student's)
    task: str
    labels: list[str] | None
    model: str  # what the teacher was fine-tuned from, for distillation.json


def prepare_teacher(cfg: Config, splits, accelerator, reporter) -> Teacher:
    """Load `cfg.distill.teacher`, check it fits the data, and run it once over every split.

    The training split's outputs become the soft targets; validation and test give the teacher's
    scores and inference speed for distillation.json. The teacher's weights are then released.

    Raises:
        LobellError: the teacher cannot be loaded, solves another task, or knows other labels.
    """
    loaded = load_teacher(cfg.distill.teacher, cfg)
    order = label_order(cfg.distill.teacher, loaded, cfg.task, splits.labels)
    eval_batch = eval_batch_size(cfg)  # the student's: a fair speed comparison
    loaded.cfg = loaded.cfg.model_copy(update={"eval_batch_size": eval_batch})
    model = accelerator.prepare_model(loaded.adapter.model, evaluation_mode=True)
    problem = parse_task(cfg.task)[1]
    teacher = Teacher(cfg.distill.teacher, loaded.model, sum(p.numel() for p in model.parameters()), torch.empty(0))
    for name in ("train", "validation", "test"):
        split = getattr(splits, name)
        if split is None:
            continue
        logits, seconds = _outputs(loaded, model, split, accelerator, reporter, f"teacher on {name}")
        logits = logits[:, order] if order is not None else logits
        if name == "train":
            teacher.train_logits = torch.from_numpy(np.ascontiguousarray(logits)).float()
        else:
            teacher.scores[name] = compute_metrics(logits, split.targets, problem, splits.labels)
        if name == "validation":
            teacher.scores["samples_per_second"] = len(split) / max(seconds, 1e-9)
    del model, loaded
    accelerator.free_memory()
    reporter.log(f"distillation: teacher {teacher.source} ({teacher.params:,} parameters) ran once over "
                 f"{len(teacher.train_logits)} training examples; validation {_headline(teacher.scores['validation'])}")
    return teacher


def load_teacher(source: str, student: Config) -> _Loaded:
    """A run folder (via Predictor), a lobell model/ folder, or (text) a fine-tuned transformers classifier."""
    from lobell.predict import Predictor

    path = Path(source)
    if (path / "model" / "lobell.json").is_file():
        predictor = Predictor.from_run(path)
        return _Loaded(predictor.adapter, predictor.cfg, predictor.cfg.task, predictor.labels, _base_model(path / "model"))
    if (path / "lobell.json").is_file():
        info = json.loads((path / "lobell.json").read_text())
        return _Loaded(load_adapter(path, info.get("modality")), student, info.get("task", student.task),
                       info.get("labels"), _base_model(path))
    if student.task.startswith("text-"):
        return _transformers_teacher(source, student)
    raise LobellError(f"distill.teacher='{source}' is not a lobell run folder or model/ folder (no lobell.json)")


def label_order(source: str, loaded: _Loaded, task: str, labels: list[str] | None) -> list[int] | None:
    """Teacher output columns in the student's label order (None: already the same), or one clear error."""
    if loaded.task.partition("-")[::2] != task.partition("-")[::2]:
        raise LobellError(f"distill.teacher='{source}' is a {loaded.task} model but the task is {task}; a teacher "
                          f"must solve the same task")
    if labels is None:  # regression
        return None
    theirs = [str(label) for label in loaded.labels or []]
    if sorted(theirs) != sorted(labels):
        raise LobellError(f"distill.teacher='{source}' predicts labels {theirs[:10]} but the data has labels "
                          f"{labels[:10]}; a teacher must know exactly the student's labels")
    return None if theirs == labels else [theirs.index(label) for label in labels]


class DistillationLoss:
    """alpha x soft loss against the cached teacher outputs + (1 - alpha) x the hard-label loss.

    `uses_index`: the training loop passes each batch's example indices, which select the teacher's rows.
    """

    uses_index = True

    def __init__(self, hard_loss, teacher_logits: torch.Tensor, problem: str, temperature: float, alpha: float):
        self.hard_loss = hard_loss
        self.teacher_logits = teacher_logits
        self.problem = problem
        self.temperature = temperature
        self.alpha = alpha

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.teacher_logits.device != logits.device:
            self.teacher_logits = self.teacher_logits.to(logits.device)
        teacher = self.teacher_logits[index.to(logits.device)]
        soft = soft_loss(logits, teacher, self.problem, self.temperature)
        return self.alpha * soft + (1 - self.alpha) * self.hard_loss(logits, targets)


def distillation_loss(cfg: DistillConfig, hard_loss, teacher: Teacher, problem: str) -> DistillationLoss:
    return DistillationLoss(hard_loss, teacher.train_logits, problem, cfg.temperature, cfg.alpha)


def soft_loss(student: torch.Tensor, teacher: torch.Tensor, problem: str, temperature: float) -> torch.Tensor:
    """Hinton's T^2 x KL(softmax(teacher/T) || softmax(student/T)); multi-label: T^2 x BCE against
    sigmoid(teacher/T), label by label; regression: MSE to the teacher's output (no temperature).
    T^2 keeps the soft gradients' size independent of T (they shrink as 1/T^2)."""
    student, teacher = student.float(), teacher.float()
    t = temperature
    if problem == "regression":
        return F.mse_loss(student.reshape(-1), teacher.reshape(-1))
    if problem == "multi-label":
        return t * t * F.binary_cross_entropy_with_logits(student / t, torch.sigmoid(teacher / t))
    return t * t * F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), log_target=True,
                            reduction="batchmean")


def compare(teacher: Teacher, cfg: Config, accelerator, adapter, model, loader, results: dict, run_dir: Path,
            reporter) -> dict:
    """Student against teacher: scores, parameters, samples/s at inference; written to distillation.json."""
    from lobell.run_dir import atomic_write_json

    start = time.perf_counter()
    predict_logits(accelerator, adapter, model, loader, reporter, description="student speed")
    seconds = time.perf_counter() - start
    student = {"model": cfg.model, "parameters": sum(p.numel() for p in accelerator.unwrap_model(model).parameters()),
               "samples_per_second": len(loader.dataset) / max(seconds, 1e-9),
               **{k: results[k] for k in ("validation", "test") if k in results}}
    mentor = {"source": teacher.source, "model": teacher.model, "parameters": teacher.params, **teacher.scores}
    record = {"temperature": cfg.distill.temperature, "alpha": cfg.distill.alpha, "teacher": mentor, "student": student,
              "size_ratio": student["parameters"] / max(teacher.params, 1),
              "speedup": student["samples_per_second"] / max(mentor.get("samples_per_second", 0), 1e-9)}
    reporter.log(f"distillation: student {student['parameters']:,} parameters ({record['size_ratio']:.0%} of the "
                 f"teacher's), {record['speedup']:.1f}x its speed; validation {_headline(student['validation'])} vs "
                 f"teacher {_headline(mentor['validation'])}")
    if accelerator.is_main_process:
        atomic_write_json(Path(run_dir) / DISTILLATION, record)
    return record


CONTROL = "distill-control"  # the control student's run folder, inside the distilled run's


def control_config(cfg: Config, run_dir: Path) -> Config:
    """The same student, data, recipe and budget, without the teacher, in `run_dir/distill-control`."""
    return cfg.model_copy(update={"distill": None, "output_dir": str(Path(run_dir) / CONTROL)})


def judge(run_dir: Path, monitor: str, distilled: dict, control: dict, reporter, main: bool) -> dict:
    """Did the teacher help? The distilled student's monitored validation metric against the control's.

    Adds "control" (its scores) and "verdict" to distillation.json, and warns when it did not help."""
    from lobell.run_dir import atomic_write_json
    from lobell.training.loop import is_minimised

    mine, theirs = distilled["validation"].get(monitor), control["validation"].get(monitor)
    helped = mine is not None and theirs is not None and (mine < theirs if is_minimised(monitor) else mine > theirs)
    verdict = {"monitor": monitor, "student": mine, "student_without_teacher": theirs, "helped": helped}
    if helped:
        reporter.log(f"distillation helped: validation {monitor} {mine:.4f} with the teacher vs {theirs:.4f} for the "
                     f"same student trained without it (run folder {CONTROL}/)")
    else:
        reporter.warn(f"WARNING: distillation did not help: validation {monitor} {mine:.4f} with the teacher vs "
                     f"{theirs:.4f} for the same student, data and budget without it ({CONTROL}/). Try a higher "
                     f"distill.alpha or temperature, a stronger teacher, or train the student without distill:")
    path = Path(run_dir) / DISTILLATION
    if main and path.is_file():
        record = json.loads(path.read_text())
        record.update(control={k: control[k] for k in ("validation", "test") if k in control}, verdict=verdict)
        atomic_write_json(path, record)
    return verdict


def _outputs(loaded: _Loaded, model, split, accelerator, reporter, description: str) -> tuple[np.ndarray, float]:
    """The teacher's outputs for every example of `split` in index order, and the seconds it took."""
    dataset = build_dataset(loaded.cfg, loaded.adapter, split, reporter=reporter)
    loader = accelerator.prepare(build_loader(loaded.cfg, loaded.adapter, dataset, train=False))
    start = time.perf_counter()
    logits, _, _ = predict_logits(accelerator, loaded.adapter, model, loader, reporter, description=description)
    return logits.reshape(len(split), -1), time.perf_counter() - start


def _transformers_teacher(source: str, student: Config) -> _Loaded:
    from lobell.models.hub import pickles_refused, resolve_pretrained
    from lobell.models.text import TextAdapter

    try:
        with pickles_refused(source):
            adapter = TextAdapter.load(resolve_pretrained(source))
    except (OSError, ValueError, KeyError, LobellError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LobellError(f"distill.teacher='{source}' is not a lobell run folder, model/ folder or loadable text "
                          f"classifier ({reason})") from None
    id2label = adapter.model.config.id2label or {}
    labels = [str(id2label[i]) for i in sorted(id2label)]
    return _Loaded(adapter, student, student.task, labels, source)


def _base_model(model_dir: Path) -> str:
    try:
        return str(json.loads((model_dir / "lobell.json").read_text()).get("base_model") or model_dir)
    except (OSError, ValueError):
        return str(model_dir)


def _headline(metrics: dict) -> str:
    name = "accuracy" if "accuracy" in metrics else "rmse"
    return f"{name} {metrics.get(name, float('nan')):.4f}"
