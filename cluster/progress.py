"""Progress for long steps: a rich bar on a terminal, a line every 10% in logs (CI, ray job logs)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import Progress


@contextlib.contextmanager
def progress(console: Console, description: str, total: int) -> Iterator[Callable[[], None]]:
    """Yields ``advance()``; call it once per finished item."""
    if console.is_terminal:
        with Progress(console=console) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)
        return
    done, t0, next_mark = 0, time.perf_counter(), 0.1

    def advance() -> None:
        nonlocal done, next_mark
        done += 1
        if done == total or done / max(total, 1) >= next_mark:
            console.print(f"{description}: {done}/{total} ({done / max(total, 1):.0%}) "
                          f"{time.perf_counter() - t0:.0f} s", highlight=False)
            next_mark = (int(done / max(total, 1) * 10) + 1) / 10

    console.print(f"{description}: 0/{total}", highlight=False)
    yield advance
