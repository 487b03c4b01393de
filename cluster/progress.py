"""Terminal output: consoles that never hard-wrap a log, and progress for long steps (a rich bar on a
terminal, a line every 10% in logs: CI, ray job logs, pipes)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import Progress


def make_console(stderr: bool = False) -> Console:
    """A rich console for proctor's output that never hard-wraps a printed line (a terminal folds long
    lines itself), so error messages and machine-readable lines stay whole in logs, pipes and CI,
    whatever ``COLUMNS`` says. Tables fit the terminal's width, or are laid out unconstrained
    anywhere else."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=True, width=None if stream.isatty() else 10_000)


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
