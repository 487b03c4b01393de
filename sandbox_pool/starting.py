"""Starting Ray actors whose worker process may crash while it starts (the sandbox pool's actors,
rollout's engines): one home for the wait-and-replace loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray


def start_actors(actors: list, probe: Callable[[Any], ray.ObjectRef], replace: Callable[[int], None],
                 retries: int) -> int:
    """Wait until every actor in ``actors`` answers ``probe(actor)``. Actor ``i`` whose worker process
    died while starting (a crash, not an error raised by its own constructor) is swapped for a new one
    by ``replace(i)`` (which updates ``actors[i]``), up to ``retries`` rounds. An error raised by the
    constructor (``actor_init_failed``: e.g. no bubblewrap, a bad model dir) is raised at once: a new
    actor would meet it again. Returns how many actors were replaced."""
    replaced = 0
    for attempt in range(retries + 1):
        crashed = []
        for i, ref in [(i, probe(a)) for i, a in enumerate(actors)]:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as e:
                if e.actor_init_failed or attempt == retries:
                    raise
                crashed.append(i)
        if not crashed:
            return replaced
        for i in crashed:
            replace(i)
            replaced += 1
    return replaced
