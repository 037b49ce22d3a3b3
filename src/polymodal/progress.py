"""One progress bar style for long loops (decoding, prediction)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")


def progress_enabled() -> bool:
    return os.environ.get("POLYMODAL_PROGRESS", "1") != "0" and sys.stderr.isatty()


def progress_bar(
    items: Iterable[T], total: int, description: str, minimum: int = 200
) -> Iterator[T]:
    """Yield from `items`, drawing a bar on a terminal when there are at least `minimum`."""
    if total < minimum or not progress_enabled():
        yield from items
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)
