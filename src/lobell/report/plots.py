"""The report's figures as PNG bytes, drawn on bare matplotlib Figures (the Agg canvas, no pyplot).

Avoiding pyplot leaves the caller's matplotlib backend alone (a notebook keeps its own) and holds no
global figure state between runs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

DPI = 100
STAGE_COLOURS = ("#e8eef7", "#f7efe3")  # alternating shades behind the freeze stages


def _figure(width: float, height: float, columns: int = 1):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def shade_stages(axes, stages: Sequence[dict], scale: float = 1.0, offset: float = 0.0) -> None:
    """Shaded spans, one per freeze stage, over epochs (or steps: `scale` steps per epoch)."""
    for index, stage in enumerate(stages):
        first, last = stage.get("first_epoch"), stage.get("last_epoch")
        if first is None or last is None:
            continue
        start, end = (first - 1) * scale + offset, last * scale + offset
        axes.axvspan(start, end, color=STAGE_COLOURS[index % 2], zorder=0, lw=0)
        axes.text((start + end) / 2, 1.0, str(stage.get("name", f"stage {index + 1}")), transform=axes.get_xaxis_transform(),
                  ha="center", va="bottom", fontsize=8, color="#555555", clip_on=False)


def curves(history: list[dict], stages: list[dict], best_epoch: int | None) -> bytes | None:
    """Loss (train and validation) and validation metrics per epoch; epoch 0 is before fine-tuning."""
    rows = sorted((row for row in history if isinstance(row.get("validation"), dict)), key=lambda r: r.get("epoch", 0))
    if not rows:
        return None
    figure, (loss_axes, metric_axes) = _figure(11, 3.8, columns=2)
    epochs = [row.get("epoch", 0) for row in rows]
    train = [(row["epoch"], row["train_loss"]) for row in rows if row.get("train_loss") is not None]
    if train:
        loss_axes.plot(*zip(*train), marker="o", label="train loss")
    _series(loss_axes, epochs, rows, "loss", "validation loss")
    names = [name for name in rows[-1]["validation"] if name != "loss"]
    for name in names:
        _series(metric_axes, epochs, rows, name, f"validation {name}")
    for axes, title in ((loss_axes, "loss"), (metric_axes, "validation metrics")):
        shade_stages(axes, stages, scale=1.0, offset=0.5)
        if best_epoch is not None and best_epoch > 0:
            axes.axvline(best_epoch, color="#2a7", ls="--", lw=1, label=f"best epoch ({best_epoch})")
        axes.set_xlabel("epoch (0 = before fine-tuning)")
        axes.set_title(title, pad=14)
        axes.set_xticks(epochs)
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize=8)
    return _png(figure)


def _series(axes, epochs: list[int], rows: list[dict], name: str, label: str) -> None:
    values = [row["validation"].get(name, math.nan) for row in rows]
    if any(isinstance(v, (int, float)) and not math.isnan(v) for v in values):
        axes.plot(epochs, values, marker="o", label=label)


def learning_rates(lrs: list[dict], stages: list[dict], epochs_trained: int) -> bytes | None:
    """Each layer group's LR at every optimizer step; a gap is a step where the group was frozen."""
    if not lrs:
        return None
    groups = list(dict.fromkeys(key for row in lrs for key in row if key != "step"))
    steps = [row.get("step", i + 1) for i, row in enumerate(lrs)]
    figure, (axes,) = _figure(11, 3.8)
    for group in groups:
        axes.plot(steps, [row.get(group, math.nan) for row in lrs], label=group, lw=1.5)
    if epochs_trained and len(lrs) % epochs_trained == 0:
        shade_stages(axes, stages, scale=len(lrs) / epochs_trained, offset=0.5)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("learning rate")
    axes.set_title("learning rate per layer group", pad=14)
    axes.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=max(1, math.ceil(len(groups) / 8)), loc="upper right")
    return _png(figure)


def confusion(matrix: np.ndarray, labels: list[str]) -> bytes:
    """Counts of (true label, predicted label), written in each cell up to 30 classes."""
    size = max(4.0, min(14.0, 1.0 + 0.5 * len(labels)))
    figure, (axes,) = _figure(size + 1.5, size)
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    ticks = range(len(labels))
    axes.set_xticks(ticks, labels, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(ticks, labels, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("confusion matrix (validation)")
    if len(labels) <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, column), count in np.ndenumerate(matrix):
            axes.text(column, row, str(count), ha="center", va="center", fontsize=8,
                      color="white" if count > threshold else "black")
    return _png(figure)


def residuals(targets: np.ndarray, predictions: np.ndarray) -> bytes:
    """Predicted against true values, and residuals (predicted - true) against the prediction."""
    figure, (fit_axes, residual_axes) = _figure(11, 4, columns=2)
    fit_axes.scatter(targets, predictions, s=10, alpha=0.6)
    low, high = float(min(targets.min(), predictions.min())), float(max(targets.max(), predictions.max()))
    fit_axes.plot([low, high], [low, high], color="#999", ls="--", lw=1, label="predicted = true")
    fit_axes.set_xlabel("true")
    fit_axes.set_ylabel("predicted")
    fit_axes.set_title("predicted vs true (validation)")
    fit_axes.legend(fontsize=8)
    residual_axes.scatter(predictions, predictions - targets, s=10, alpha=0.6)
    residual_axes.axhline(0, color="#999", ls="--", lw=1)
    residual_axes.set_xlabel("predicted")
    residual_axes.set_ylabel("residual (predicted - true)")
    residual_axes.set_title("residuals (validation)")
    for axes in (fit_axes, residual_axes):
        axes.grid(alpha=0.3)
    return _png(figure)


def overlaid_curves(series: dict[str, list[list[tuple[int, float]]]], metric: str) -> bytes | None:
    """One colour per strategy: each seed's validation curve faint, their mean bold."""
    if not any(runs for runs in series.values()):
        return None
    figure, (axes,) = _figure(9, 4)
    colours = [f"C{i}" for i in range(10)]
    for index, (name, runs) in enumerate(series.items()):
        colour = colours[index % len(colours)]
        by_epoch: dict[int, list[float]] = {}
        for points in runs:
            if points:
                axes.plot(*zip(*points), color=colour, alpha=0.3, lw=1)
            for epoch, value in points:
                by_epoch.setdefault(epoch, []).append(value)
        if by_epoch:
            epochs = sorted(by_epoch)
            axes.plot(epochs, [float(np.mean(by_epoch[e])) for e in epochs], color=colour, lw=2.5, marker="o",
                      label=f"{name} (mean of {len(runs)})")
    axes.set_xlabel("epoch (0 = before fine-tuning)")
    axes.set_ylabel(f"validation {metric}")
    axes.set_title(f"validation {metric} per epoch")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)
