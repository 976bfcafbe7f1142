"""The sections of report.html, each built from a RunFiles; each returns HTML and the PNGs it drew."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lobell.report import html, plots
from lobell.report.choices import recipe_profile, recipe_rows, stage_rows
from lobell.report.run_files import RunFiles

TOP_LOSSES = 12  # validation examples shown in "where it fails"
MATRIX_CLASSES = 50  # beyond this many classes the confusion matrix shows the most frequent ones


@dataclass
class Section:
    html: str
    images: dict[str, bytes] = field(default_factory=dict)  # file name beside the report -> PNG


def summary(run: RunFiles) -> Section:
    """Did it work: the monitored metric before and after, test metrics, what was missing."""
    monitor = run.monitor()
    before, after = (run.metrics.get(k) or {} for k in ("before", "validation"))
    rows = [(name, before.get(name), after.get(name), (run.metrics.get("test") or {}).get(name))
            for name in dict.fromkeys([*after, *before])]
    parts = [html.paragraph(f"{run.task} on {run.base_model}; {len(run.labels)} labels; trained "
                            f"{run.epochs_trained} epoch(s), best epoch {run.metrics.get('best_epoch', '?')}.")]
    if monitor in after and monitor in before:
        change = after[monitor] - before[monitor]
        parts.append(html.paragraph(f"validation {monitor}: {before[monitor]:.4f} before fine-tuning -> "
                                    f"{after[monitor]:.4f} after ({change:+.4f})."))
    if rows:
        parts.append(html.table(["metric", "before fine-tuning", "validation (best epoch)", "test"], rows,
                                ident="metrics"))
    for problem in run.problems:
        parts.append(html.paragraph(f"note: {problem}", css="note"))
    return Section(html.section("Summary", *parts, anchor="summary"))


def curves(run: RunFiles) -> Section:
    png = plots.curves(run.history, run.stages, run.metrics.get("best_epoch"))
    if png is None:
        return Section(html.section("Training curves", html.paragraph("no per-epoch metrics (metrics.jsonl)", "note")))
    text = html.paragraph("Shaded spans are the stages of the freeze plan; epoch 0 is the model before "
                          "fine-tuning.", css="muted")
    stages = html.table(["stage", "epochs", "groups training", "learning rate", "parameters training"],
                        stage_rows(run), ident="stages") if run.stages else ""
    return Section(html.section("Training curves", text, html.image(png, "loss and metric curves"), stages,
                                anchor="curves"), {"report_curves.png": png})


def learning_rates(run: RunFiles) -> Section:
    png = plots.learning_rates(run.lrs, run.stages, run.epochs_trained)
    if png is None:
        return Section(html.section("Learning rates", html.paragraph("no learning-rate log (lrs.json)", "note")))
    text = html.paragraph("Each layer group's learning rate at every optimizer step; a group is absent while it "
                          "is frozen.", css="muted")
    return Section(html.section("Learning rates", text, html.image(png, "learning rate per group"), anchor="lrs"),
                   {"report_lrs.png": png})


def errors(run: RunFiles) -> Section:
    """Where it fails: the confusion matrix and per-class scores, or residuals; plus the worst examples."""
    if not run.predictions:
        return Section(html.section("Errors", html.paragraph("no validation predictions "
                                                             "(predictions_validation.jsonl)", "note")))
    build = {"classification": _classification, "multi-label": _multi_label, "regression": _regression,
             "ctc": _recognition, "seq2seq": _generations, "causal-lm": _generations, "masked-lm": _masked_lm}
    if run.config.get("tasks"):  # several heads: each row holds a target and prediction per task
        section = Section(html.paragraph("a multi-task run: predictions_validation.jsonl holds each example's target "
                                         "and prediction per task (docs/multi-task.md)", "note"))
    else:
        section = build.get(run.problem, _classification)(run)
    section.html = html.section("Where it fails (validation)", section.html, _top_losses(run), anchor="errors")
    return section


def _generations(run: RunFiles) -> Section:
    from lobell.report.generations import generations

    return generations(run, Section)


def _classification(run: RunFiles) -> Section:
    from sklearn.metrics import classification_report, confusion_matrix

    labels = run.labels
    truth = [str(row.get("target")) for row in run.predictions]
    predicted = [str(row.get("prediction")) for row in run.predictions]
    labels += sorted(set(truth + predicted) - set(labels))  # a label the model lacks is shown, not dropped
    report = classification_report(truth, predicted, labels=labels, output_dict=True, zero_division=0)
    shown, note = _matrix_classes(labels, truth)
    matrix = confusion_matrix(truth, predicted, labels=shown)
    png = plots.confusion(matrix, shown)
    counts = note + html.table(["true \\ predicted", *shown], ([label, *map(int, row)] for label, row in
                                                              zip(shown, matrix)), ident="confusion-matrix")
    per_class = html.table(["label", "precision", "recall", "f1", "support"],
                           ([label, report[label]["precision"], report[label]["recall"], report[label]["f1-score"],
                             int(report[label]["support"])] for label in labels), ident="per-class")
    return Section(html.image(png, "confusion matrix") + counts + per_class, {"report_confusion.png": png})


def _matrix_classes(labels: list[str], truth: list[str]) -> tuple[list[str], str]:
    """The classes the confusion matrix shows: all up to MATRIX_CLASSES, else the most frequent in validation
    (10,000 classes would be a 10,000 x 10,000 matrix: 800 MB and minutes of plotting, unreadable anyway)."""
    if len(labels) <= MATRIX_CLASSES:
        return labels, ""
    frequency = Counter(truth)
    shown = sorted(labels, key=lambda label: -frequency[label])[:MATRIX_CLASSES]
    shown = [label for label in labels if label in set(shown)]
    return shown, html.paragraph(f"{len(labels)} classes: the confusion matrix shows the {MATRIX_CLASSES} most "
                                 f"frequent in validation; the per-class scores below cover all", "note")


def _recognition(run: RunFiles) -> Section:
    """Speech recognition: how many clips were transcribed exactly, and the character error rates."""
    rates = [float(row["cer"]) for row in run.predictions if isinstance(row.get("cer"), (int, float))]
    exact = sum(row.get("target") == row.get("prediction") for row in run.predictions)
    rows = [("clips transcribed exactly", f"{exact} of {len(run.predictions)}")]
    if rates:
        rows += [("median character error rate", float(np.median(rates))), ("worst", float(max(rates)))]
    return Section(html.table(["transcripts", "value"], rows, ident="transcripts"))


def _masked_lm(run: RunFiles) -> Section:
    return Section(html.paragraph("masked-LM: each validation text's loss over its masked tokens is in "
                                  "predictions_validation.jsonl; the texts the model finds hardest are below", "note"))


def _multi_label(run: RunFiles) -> Section:
    from sklearn.metrics import precision_recall_fscore_support
    from sklearn.preprocessing import MultiLabelBinarizer

    labels = run.labels
    binarizer = MultiLabelBinarizer(classes=labels)
    truth = binarizer.fit_transform([[str(v) for v in row.get("target") or []] for row in run.predictions])
    predicted = binarizer.transform([[str(v) for v in row.get("prediction") or []] for row in run.predictions])
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, zero_division=0)
    rows = zip(labels, precision.tolist(), recall.tolist(), f1.tolist(), map(int, support))
    return Section(html.table(["label", "precision", "recall", "f1", "support"], rows, ident="per-class"))


def _regression(run: RunFiles) -> Section:
    pairs = [(row.get("target"), row.get("prediction")) for row in run.predictions]
    pairs = [(float(t), float(p)) for t, p in pairs if isinstance(t, (int, float)) and isinstance(p, (int, float))]
    if not pairs:
        return Section(html.paragraph("no numeric targets in the predictions", "note"))
    targets, predictions = (np.array(v) for v in zip(*pairs))
    png = plots.residuals(targets, predictions)
    residual = predictions - targets
    stats = html.table(["residual", "value"], [("mean (bias)", float(residual.mean())),
                                               ("mean absolute", float(np.abs(residual).mean())),
                                               ("largest absolute", float(np.abs(residual).max()))], ident="residuals")
    return Section(html.image(png, "residual plot") + stats, {"report_residuals.png": png})


def _top_losses(run: RunFiles) -> str:
    worst = sorted((r for r in run.predictions if isinstance(r.get("loss"), (int, float))),
                   key=lambda r: -r["loss"])[:TOP_LOSSES]
    rows = []
    for row in worst:
        shown = _input_cell(run, row.get("input", ""))
        probability = row.get("probability", row.get("probabilities"))
        rows.append((row.get("index"), shown, _label(row.get("target")), _label(row.get("prediction")),
                     probability if isinstance(probability, (int, float)) else None, row["loss"]))
    intro = html.paragraph(f"The {len(rows)} validation examples with the highest loss.", css="muted")
    return "<h3>Top-loss examples</h3>" + intro + html.table(
        ["#", "input", "target", "prediction", "probability", "loss"], rows, ident="top-losses", raw_columns=(1,))


def _input_cell(run: RunFiles, value: object) -> str:
    """Text, HTML-escaped; an image path as a small embedded thumbnail (its name below)."""
    text = str(value)
    if run.modality == "image":
        path = Path(text)
        if not path.is_absolute():
            path = run.run_dir / path
        thumb = html.thumbnail(path) if path.is_file() else None
        if thumb is not None:
            return f"{thumb}<br><span class=\"muted\">{html.escape(path.name)}</span>"
    return html.escape(text)


def _label(value: object) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else "" if value is None else str(value)


def recipe(run: RunFiles) -> Section:
    rows, source = recipe_rows(run)
    if not rows:
        return Section(html.section("Recipe", html.paragraph("no recipe.json or config.yaml", "note")))
    note = (f"from recipe.json; {recipe_profile(run) or 'no profile'}; [yours] marks what you set"
            if source == "recipe.json" else "the resolved settings from config.yaml (no recipe.json in this run)")
    return Section(html.section("Recipe: the six LO-BELL choices", html.paragraph(note, "muted"),
                                html.table(["choice", "setting", "why"], rows, ident="recipe"), anchor="recipe"))


def timing(run: RunFiles) -> Section:
    values = run.metrics.get("timing") or {}
    per_epoch = [(row["epoch"], row.get("seconds")) for row in run.history if row.get("epoch")]
    if not values and not per_epoch:
        return Section(html.section("Timing", html.paragraph("no timing in metrics.json", "note")))
    names = {"wall_seconds": "wall time (s)", "train_seconds": "training time (s)",
             "train_samples_per_second": "training samples / s", "train_tokens_per_second": "training tokens / s",
             "data_loading_share": "share of training time spent loading data",
             "compute_share": "share of training time spent computing"}
    rows = [(names.get(key, key), f"{value:.1%}" if key.endswith("_share") and isinstance(value, float) else value)
            for key, value in values.items()]
    epochs = html.table(["epoch", "seconds"], per_epoch, ident="epoch-seconds") if per_epoch else ""
    return Section(html.section("Timing", html.table(["measure", "value"], rows, ident="timing"), epochs,
                                anchor="timing"))


def lora_and_distillation(run: RunFiles) -> Section:
    """LoRA's trainable share and memory, the student against its teacher; nothing when the run used neither."""
    from lobell.report.compression import html_parts

    parts = html_parts(run.run_dir)
    return Section(html.section("LoRA and distillation", *parts, anchor="compression") if parts else "")


def pretraining(run: RunFiles) -> Section:
    """pretrain: the masked-LM phase before the classifier (training/pretrain.py)."""
    phase = run.metrics.get("pretrain")
    if not phase:
        return Section("")
    extra = f" plus {phase['extra_text']}" if phase.get("extra_text") else ""
    text = (f"Masked-LM continued pre-training of {phase['base_model']} on the training texts{extra}, "
            f"{phase['epochs']} epoch(s): held-back perplexity {phase['perplexity_before']:.2f} -> "
            f"{phase['perplexity_after']:.2f}. The classifier above started from that encoder "
            f"({phase['model']}); the phase's own report is in {phase['run_folder']}/report.html.")
    return Section(html.section("Masked-LM pre-training", html.paragraph(text), anchor="pretrain"))


ALL = (summary, pretraining, curves, learning_rates, errors, recipe, timing, lora_and_distillation)
