"""The learner process's memory: hand freed heap pages back to the OS, read resident and peak memory."""

from __future__ import annotations

import contextlib


def release_memory(collect: bool = True) -> float:
    """Collect garbage (``collect``) and hand the heap's free pages back to the OS (glibc's
    ``malloc_trim``; a no-op elsewhere); returns this process's resident memory in GiB. Freed
    tensors otherwise stay in the allocator's arenas, and on a CPU node the learner shares its
    memory with the engines: after a step that is memory the push and the next rollout need."""
    import ctypes
    import gc
    import sys

    import psutil

    if collect:
        gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc
            ctypes.CDLL("libc.so.6").malloc_trim(0)
    return psutil.Process().memory_info().rss / 2**30


def peak_rss_gib() -> float:
    """Peak resident memory of this process in GiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
