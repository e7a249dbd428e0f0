"""One progress-bar helper (Rich) so library code can show progress without printing elsewhere."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_enabled() -> bool:
    if os.environ.get("LOOKALIKE_PROGRESS", "").lower() in {"0", "false", "no", "off"}:
        return False
    return sys.stderr.isatty() or os.environ.get("LOOKALIKE_PROGRESS", "").lower() in {
        "1",
        "true",
        "yes",
        "on",
    }


@contextmanager
def progress_bar(
    description: str, total: int | None, *, enabled: bool = True, extra: str = ""
) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, **fields)``; draws a Rich bar on stderr when enabled and interactive."""
    if not (enabled and progress_enabled()):
        yield lambda n=1, **fields: None
        return
    from rich.console import Console

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total, extra=extra)

        def advance(n: int = 1, **fields) -> None:
            if fields:
                extra_text = " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
                )
                bar.update(task, advance=n, extra=extra_text)
            else:
                bar.update(task, advance=n)

        yield advance
