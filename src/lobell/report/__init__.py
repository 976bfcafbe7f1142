"""Reports for a finished run: report.html with its PNG plots, and the model card model/README.md."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from lobell.report import html, sections
from lobell.report.card import write_model_card
from lobell.report.run_files import RunFiles, load_run
from lobell.run_dir import atomic_write_bytes, atomic_write_text

REPORT = "report.html"


def write_report(run_dir: str | Path) -> Path:
    """Build `report.html` (self-contained: images embedded) and the PNG files beside it.

    Missing optional files (stages.json, lrs.json, predictions, ...) leave their section with a
    note; a section that fails for another reason is replaced by a note naming the error, so one
    bad file never costs the rest of the report.

    Raises:
        LobellError: `run_dir` is not a folder.
    """
    run = load_run(run_dir)
    parts, images = [], {}
    for build in sections.ALL:
        try:
            section = build(run)
        except Exception as exc:  # noqa: BLE001 - a report section must never take the others down
            section = sections.Section(_failed(build.__name__, exc))
        parts.append(section.html)
        images.update(section.images)
    for name, png in images.items():
        atomic_write_bytes(run.run_dir / name, png)
    title = f"lobell run {run.run_dir.resolve().name}"
    path = run.run_dir / REPORT
    atomic_write_text(path, html.page(title, f"{run.task} | {run.base_model} | {run.run_dir.resolve()}", parts))
    return path


def write_run_documents(run_dir: str | Path, log: Callable[[str], None] = print,
                        warn: Callable[[str], None] | None = None) -> None:
    """The model card and the report at the end of a run: a failure is reported through `warn`
    (default: stderr, even under --quiet), never raised, because the run has already finished and
    its model is safely written."""
    warn = warn or (lambda message: print(message, file=sys.stderr, flush=True))
    for name, write in (("model card", write_model_card), ("report", write_report)):
        try:
            path = write(run_dir)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            warn(f"warning: {name} not written ({type(exc).__name__}: {exc}); rebuild it with: lobell report {run_dir}")
        else:
            log(f"{name}: {path}")


def _failed(name: str, exc: Exception) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return html.section(name.replace("_", " ").capitalize(),
                        html.paragraph(f"this section could not be built: {type(exc).__name__}: {exc}{at}", "note"))


__all__ = ["REPORT", "RunFiles", "load_run", "write_model_card", "write_report", "write_run_documents"]
