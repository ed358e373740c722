"""Progress on stderr, the one place that builds gatescope's rich progress displays: a bar for the analyses' long
loops (`counter`, `track`), one in tokens for runs over a corpus (`token_progress`), a bar for each of several
tasks (`task_bars`: retraining the sample models) and one line for each stage of a long job (`stages`: a live
display on a terminal, a plain line with its wall and CPU time in a log)."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


def _display(*columns: Any, transient: bool = False, enabled: bool = True) -> Any:
    """A rich Progress on stderr with these columns (a no-op display when not ``enabled``)."""
    from rich.console import Console
    from rich.progress import Progress

    return Progress(*columns, console=Console(stderr=True), transient=transient, disable=not enabled)


class Counter:
    """The handle of a running bar: advance it, or rename what it is counting; a no-op when the bar is off."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress, self._task = progress, task

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def describe(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)


@contextmanager
def counter(total: int | None, description: str, unit: str = "", enabled: bool = False) -> Iterator[Counter]:
    """A transient bar of ``total`` steps of ``unit`` ("epochs") on stderr while the block runs, when
    ``enabled``."""
    if not enabled:
        yield Counter()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TimeRemainingColumn())
    with _display(*columns, transient=True) as progress:
        yield Counter(progress, progress.add_task(description, total=total))


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = False) -> Iterator[T]:
    """Yield ``items``, showing a transient progress bar on stderr when ``enabled``."""
    with counter(total, description, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.advance()


@contextmanager
def token_progress(total: int, description: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich bar on stderr over ``total`` tokens with tokens/s; yields ``advance(tokens)``."""
    from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed or 0:,.0f} tokens/s")

    columns = (TextColumn(description), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} tokens"),
               Rate(), TimeRemainingColumn())
    with _display(*columns, enabled=enabled) as bar:
        task = bar.add_task(description, total=total)
        yield lambda tokens: bar.advance(task, tokens)


@contextmanager
def task_bars() -> Iterator[Callable[[str], Callable[[int, int], None]]]:
    """Bars on stderr, one a task, each kept when done with its count and time; yields ``start(description)``,
    which adds a bar and returns its ``update(done, total)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    with _display(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bars:

        def start(description: str) -> Callable[[int, int], None]:
            task = bars.add_task(description, total=None)
            return lambda done, total: bars.update(task, completed=done, total=total)

        yield start


Stage = Callable[[str], AbstractContextManager[None]]


@contextmanager
def stages(job: str, enabled: bool) -> Iterator[Stage]:
    """One line a stage on stderr; yields ``stage(description)``, a context manager around each stage's work. On
    a terminal a live display (a spinner, then "done" and the stage's time); otherwise (a log file, a pipe, CI) a
    plain line as each stage ends, ``JOB: DESCRIPTION: 12.3 s (CPU 20.1 s)``. Nothing when not ``enabled``."""
    if enabled and not sys.stderr.isatty():
        yield _logged(job)
        return
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(finished_text="[green]done"), TextColumn("{task.description}"), TimeElapsedColumn())
    with _display(*columns, enabled=enabled) as progress:

        @contextmanager
        def stage(description: str) -> Iterator[None]:
            task = progress.add_task(description, total=1)
            yield
            progress.update(task, completed=1)
            progress.stop_task(task)

        yield stage


def _logged(job: str) -> Stage:
    """Stages written as one line each when they end, with their wall and CPU time."""

    @contextmanager
    def stage(description: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        print(f"{job}: {description}: {time.perf_counter() - wall:.1f} s (CPU {time.process_time() - cpu:.1f} s)",
              file=sys.stderr, flush=True)

    return stage
