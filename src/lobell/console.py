"""What a run prints: one console for messages and progress bars, silent off the main process."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")


class Reporter:
    """Messages and progress bars for the main process; `quiet` keeps only the final summary."""

    def __init__(self, quiet: bool = False, is_main: bool = True):
        self.quiet = quiet or not is_main
        self.is_main = is_main
        self.console = Console(file=sys.stderr, highlight=False, soft_wrap=True)

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    def warn(self, message: str) -> None:
        """Something the user must know even with --quiet (a damaged checkpoint skipped): to stderr."""
        if self.is_main:
            print(message, file=sys.stderr, flush=True)

    def result(self, message: str) -> None:
        """A line that belongs to the run's outcome: printed even with --quiet."""
        if self.is_main:
            print(message, flush=True)

    @contextmanager
    def progress(self, description: str, total: int):
        """A bar over `total` steps; `advance(n, **fields)` moves it. Invisible when quiet or not a TTY."""
        if self.quiet or not self.console.is_terminal:
            yield _NoBar()
            return
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[status]}")]
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total, status="")
            yield _Bar(bar, task)

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        """`items`, one at a time, behind a bar (tokenising chunks, caching features, prediction
        batches); plain iteration when quiet or not a TTY. `total` defaults to `len(items)`."""
        with self.progress(description, len(items) if total is None else total) as bar:
            for item in items:
                yield item
                bar.advance()


class _Bar:
    def __init__(self, bar: Progress, task):
        self.bar, self.task = bar, task

    def advance(self, steps: int = 1, status: str | None = None) -> None:
        self.bar.update(self.task, advance=steps, **({"status": status} if status is not None else {}))


class _NoBar:
    def advance(self, steps: int = 1, status: str | None = None) -> None:
        pass
