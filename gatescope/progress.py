"""A rich progress bar on stderr for the analyses' long loops (off unless asked for)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


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
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
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
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed or 0:,.0f} tokens/s")

    columns = (TextColumn(description), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} tokens"),
               Rate(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not enabled) as bar:
        task = bar.add_task(description, total=total)
        yield lambda tokens: bar.advance(task, tokens)
