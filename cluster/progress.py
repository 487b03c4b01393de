"""Terminal output: consoles that never hard-wrap a log, and progress for long steps (a rich bar on a
terminal, a line every 10% in logs: CI, ray job logs, pipes)."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

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
def progress(console: Console, description: str, total: int, t0: float | None = None) -> Iterator[Callable[[], None]]:
    """Yields ``advance()``; call it once per finished item. Seconds count from ``t0`` (default: now)."""
    if console.is_terminal:
        with Progress(console=console) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)
        return
    done, next_mark = 0, 0.1
    t0 = time.perf_counter() if t0 is None else t0

    def advance() -> None:
        nonlocal done, next_mark
        done += 1
        if done == total or done / max(total, 1) >= next_mark:
            console.print(f"{description}: {done}/{total} ({done / max(total, 1):.0%}) "
                          f"{time.perf_counter() - t0:.0f} s", highlight=False)
            next_mark = (int(done / max(total, 1) * 10) + 1) / 10

    console.print(f"{description}: 0/{total}", highlight=False)
    yield advance


@contextlib.contextmanager
def progress_of(console: Console, description: str) -> Iterator[Callable[[int, int], None]]:
    """Yields ``update(done, total)`` for a step whose total is known only once it runs (the learner's
    minibatches): shown as ``progress`` from the first update on."""
    with contextlib.ExitStack() as stack:
        state: dict = {"done": 0}
        t0 = time.perf_counter()  # the step's time counts from here, before its first item

        def update(done: int, total: int) -> None:
            if "advance" not in state:
                state["advance"] = stack.enter_context(progress(console, description, total, t0))
            while state["done"] < done:
                state["advance"]()
                state["done"] += 1

        yield update


_TERMINAL_CODES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")


class _Tee:
    """A console's stream that also writes each finished line to a log file: timestamped, without
    terminal codes, a carriage-return-redrawn line (a progress bar) as its last state."""

    def __init__(self, stream, log):
        self.stream, self.log, self.partial = stream, log, ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            line = _TERMINAL_CODES.sub("", line).rsplit("\r", 1)[-1].rstrip()
            if line:
                self.log.write(f"{datetime.now().isoformat(sep=' ', timespec='seconds')} {line}\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the console's own stream
        return getattr(self.stream, name)


@contextlib.contextmanager
def log_to(console: Console, path: Path) -> Iterator[None]:
    """While inside, everything ``console`` prints also goes to ``path`` (appended: a resumed run
    continues its log)."""
    with open(path, "a", buffering=1) as log:
        stream = console.file
        console.file = _Tee(stream, log)
        try:
            yield
        finally:
            console.file = stream
