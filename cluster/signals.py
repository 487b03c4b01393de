"""Ctrl-C and SIGTERM end a run the same way: a ``KeyboardInterrupt`` in the main thread, so the driver
saves what is finished, stops its actors and exits 130 (SIGINT) or 143 (SIGTERM).

Installed explicitly because neither default can be trusted: a process started with ``&`` from a
non-interactive shell inherits SIGINT as *ignored*, and ``ray.init`` installs a SIGTERM handler that
exits at once, skipping every ``except`` block (``init_ray`` re-installs these after it). The signal
received is recorded here, not only in the exception's type: ``ray.get`` turns an interrupt that
arrives while it waits into a plain ``KeyboardInterrupt``.
"""

from __future__ import annotations

import signal
import threading

_received: list[int] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler, preemption), handled like Ctrl-C."""


def _on_signal(signum, frame):
    _received.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def install() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the first signal received (SIGINT when a KeyboardInterrupt came from elsewhere)."""
    if _received:
        return 128 + _received[0]
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
