"""Ctrl-C and SIGTERM end a run the same way: a ``KeyboardInterrupt`` in the main thread, so the driver
saves what is finished, stops its actors and exits 130 (SIGINT) or 143 (SIGTERM).

Installed explicitly because neither default can be trusted: a process started with ``&`` from a
non-interactive shell inherits SIGINT as *ignored*, and ``ray.init`` installs a SIGTERM handler that
exits at once, skipping every ``except`` block (``init_ray`` re-installs these after it).
"""

from __future__ import annotations

import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler, preemption), handled like Ctrl-C."""


def _on_term(signum, frame):
    raise Terminated()


def install() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _on_term)


def exit_code(exc: KeyboardInterrupt) -> int:
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
