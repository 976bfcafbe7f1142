"""The model card, model/README.md: what the model is, what it was trained on, how well, how to load it."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from lobell.errors import LobellError
from lobell.report import compression
from lobell.report.choices import recipe_profile, recipe_rows
from lobell.report.run_files import RunFiles, load_run
from lobell.report.snippets import loading_snippet
from lobell.run_dir import atomic_write_text

_PIPELINE_TAGS = {"text": "text-classification", "image": "image-classification", "audio": "audio-classification",
                  "speech": "automatic-speech-recognition"}
_LIBRARIES = {"text": "transformers", "audio": "transformers", "speech": "transformers"}
_SMALL_VALIDATION = 500  # below this, a validation accuracy's 95% interval is wider than about +-4 points


def write_model_card(run_dir: str | Path) -> Path:
    """Write `model/README.md` (atomically) from the run folder's files.

    Raises:
        LobellError: the run folder or its model/ folder does not exist.
    """
    run = load_run(run_dir)
    model_dir = run.run_dir / "model"
    if not model_dir.is_dir():
        raise LobellError(f"run folder '{run.run_dir}' has no model/ folder: the run did not finish")
    path = model_dir / "README.md"
    atomic_write_text(path, model_card(run))
    return path


def model_card(run: RunFiles) -> str:
    parts = [_front_matter(run), f"# {run.run_dir.resolve().name}\n",
             (f"A {run.task} model fine-tuned by [lobell](https://pypi.org/project/lobell/) from "
              f"`{run.base_model}`.\n"),
             _overview(run), _data(run), _recipe(run), _metrics(run), compression.markdown(run.run_dir),
             "## How to load it\n\n" + loading_snippet(run) + "\n", _limitations(run)]
    return "\n".join(part for part in parts if part)


def _front_matter(run: RunFiles) -> str:
    """Hub metadata; `base_model` only for a hub name (a local path or torchvision name resolves nowhere there)."""
    lines = ["---", "tags:", "- lobell", f"- {run.task}"]
    library = _LIBRARIES.get(run.modality) or run.model_info.get("library")
    if library:
        lines.append(f"library_name: {library}")
    if run.modality in _PIPELINE_TAGS and run.problem != "regression":
        lines.append(f"pipeline_tag: {_PIPELINE_TAGS[run.modality]}")
    base = run.base_model
    hub_name = "/" in base and not base.startswith(("/", ".", "~", "torchvision/")) and not Path(base).exists()
    if hub_name:
        lines.append(f"base_model: {json.dumps(base)}")
    return "\n".join([*lines, "---", ""])


def _overview(run: RunFiles) -> str:
    labels = run.labels
    shown = ", ".join(f"`{label}`" for label in labels[:30]) + (f" and {len(labels) - 30} more" if len(labels) > 30 else "")
    rows = [("base model", f"`{run.base_model}`"), ("task", run.task),
            ("labels", f"{len(labels)}: {shown}" if labels else "none (regression)" if run.problem == "regression" else "?")]
    if run.config.get("tasks"):  # several heads: each task's kind and column instead of one label set
        rows[-1] = ("tasks", "; ".join(f"`{t.get('name')}` ({t.get('kind', 'classification')}, column "
                                       f"`{t.get('label_column') or t.get('name')}`, loss weight {t.get('loss_weight', 1.0)})"
                                       for t in run.config["tasks"]))
    return "## Model\n\n" + _markdown_table(["", ""], rows) + "\n"


def _data(run: RunFiles) -> str:
    data = run.config.get("data") or {}
    sizes = run.metrics.get("data") or {}
    profile = run.recipe.get("profile") if isinstance(run.recipe, dict) else None
    train_size = sizes.get("train") or (profile or {}).get("n_train") or _estimated_train_size(run)
    rows = [("train", _file(data.get("train")), train_size),
            ("validation", _file(data.get("validation")) if data.get("validation") else
             f"held out of train ({data.get('val_fraction', 0.1):.0%}, stratified)", sizes.get("validation") or
             len(run.predictions) or "?"),
            ("test", _file(data.get("test")), sizes.get("test") or len(run.test_predictions) or "")]
    rows = [(split, source, f"{size:,}" if isinstance(size, int) else size) for split, source, size in rows]
    text = "## Data\n\n" + _markdown_table(["split", "source", "examples"], [r for r in rows if r[1] or r[2]]) + "\n"
    if run.problem == "classification" and run.predictions and not run.config.get("tasks"):
        counts = Counter(str(row.get("target")) for row in run.predictions)
        text += "\nValidation labels: " + ", ".join(f"`{k}` {v}" for k, v in counts.most_common()) + ".\n"
    return text


def _estimated_train_size(run: RunFiles) -> str:
    """Examples per epoch from the training throughput, when metrics.json has no split sizes."""
    timing = run.metrics.get("timing") or {}
    seconds, rate, epochs = timing.get("train_seconds"), timing.get("train_samples_per_second"), run.epochs_trained
    if not (seconds and rate and epochs):
        return "?"
    return f"{round(seconds * rate / epochs):,} per epoch"


def _file(value) -> str:
    return f"`{value}`" if value else ""


def _recipe(run: RunFiles) -> str:
    rows, source = recipe_rows(run)
    if not rows:
        return ""
    profile = recipe_profile(run) if source == "recipe.json" else None
    intro = f"The six LO-BELL choices (from {source}{'; ' + profile if profile else ''}):"
    return f"## Recipe\n\n{intro}\n\n" + _markdown_table(["choice", "setting", "why"], rows) + "\n"


def _metrics(run: RunFiles) -> str:
    before, after, test = (run.metrics.get(k) or {} for k in ("before", "validation", "test"))
    names = list(dict.fromkeys([*after, *test]))
    if not names:
        return "## Metrics\n\nmetrics.json is missing: the run did not finish.\n"
    rows = [(name, _number(before.get(name)), _number(after.get(name)), _number(test.get(name))) for name in names]
    return (f"## Metrics\n\nBest epoch {run.metrics.get('best_epoch', '?')} of {run.epochs_trained}; `report.html` in "
            f"the run folder has the curves, confusion matrix and worst examples.\n\n"
            + _markdown_table(["metric", "before fine-tuning", "validation", "test"], rows) + "\n")


def _limitations(run: RunFiles) -> str:
    notes = [("Measured on held-out data from the same source as the training data; expect lower scores on data "
              "that differs in domain, style or label balance.")]
    monitor, before, after = run.monitor(), run.metrics.get("before") or {}, run.metrics.get("validation") or {}
    if monitor in before and monitor in after and (after[monitor] - before[monitor]) * _sign(monitor) <= 0:
        notes.append(f"Fine-tuning did not improve validation {monitor} ({before[monitor]:.4f} before, "
                     f"{after[monitor]:.4f} after): do not use this model as is.")
    size = len(run.predictions)
    if "accuracy" in after and 0 < size < _SMALL_VALIDATION:
        p = after["accuracy"]
        half = 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / size)
        notes.append(f"The validation set is small ({size} examples): its accuracy {p:.3f} is uncertain by about "
                     f"+-{half:.3f} (95% normal interval).")
    if run.problem not in ("regression", "ctc") and run.labels and not run.config.get("tasks"):
        notes.append("It only knows the labels above and always answers with one of them, even for inputs that "
                     "fit none.")
    if run.modality == "text":
        notes.append("Texts longer than the tokenizer's limit are truncated; only their start is read.")
    return "## Limitations\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"


def _sign(metric: str) -> int:
    from lobell.evaluate import is_minimised

    return -1 if is_minimised(metric) else 1


def _number(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _markdown_table(header: list[str], rows: list) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
