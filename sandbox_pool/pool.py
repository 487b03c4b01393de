"""A pool of SandboxActors (Ray) with async submit/gather, back-pressure, per-request timeouts, and
replacement of dead actors (their requests are retried on the new one)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import weakref
from collections.abc import Callable, Sequence

import ray

from proctor.problems.format import Problem
from proctor.sandbox_pool.judge import (
    DEFAULT_OUTPUT_BYTES,
    Verdict,
    Which,
    request,
    selected_tests,
    verdict_from,
)
from proctor.sandbox_pool.runner import Backend, Sandbox
from proctor.sandbox_pool.starting import start_actors

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
class SandboxActor:
    """Owns a ``Sandbox`` (one fork server with ``slots`` concurrent runs, by default)."""

    def __init__(self, backend: Backend = "auto", slots: int = 2):
        self.sandbox = Sandbox(backend, slots)
        self.pid = os.getpid()

    def info(self) -> dict:
        return {"pid": self.pid, "backend": self.sandbox.backend, "slots": self.sandbox.slots,
                "restarts": self.sandbox.restarts}

    async def judge(self, problem: Problem, code: str, which: Which = "all",
                    output_bytes: int = DEFAULT_OUTPUT_BYTES) -> Verdict:
        tests = selected_tests(problem, which)
        futures = [asyncio.wrap_future(self.sandbox.submit(request(problem, code, t, output_bytes)))
                   for t, _ in tests]
        results = await asyncio.gather(*futures)
        return verdict_from(tests, results)


class SandboxPool:
    """Judges candidates on ``actors`` SandboxActors; Ray must be initialised.

    ``max_inflight`` bounds the candidates queued at once (back-pressure for the callers' coroutines);
    a request that takes longer than ``timeout_s`` or whose actor dies is retried ``retries`` times on
    a (replacement) actor, then reported as ``infra_error``.
    """

    def __init__(self, actors: int = 1, backend: Backend = "auto", slots: int = 2, *,
                 max_inflight: int | None = None, timeout_s: float = 120.0, retries: int = 2,
                 output_bytes: int = DEFAULT_OUTPUT_BYTES):
        self.backend, self.slots, self.output_bytes = backend, slots, output_bytes
        self.actors = [self._spawn() for _ in range(actors)]
        self.max_inflight = max_inflight or 4 * actors * slots
        self.timeout_s, self.retries = timeout_s, retries
        self.replaced = 0
        self._rr = itertools.count()
        # One semaphore per event loop: an asyncio.Semaphore binds to the loop it first waits in,
        # and callers run one loop per asyncio.run (and two at once in one-step-off training).
        self._sems: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._start()  # fail here, not mid-batch, if they cannot start

    def _start(self) -> None:
        """Wait until every actor runs; one whose worker crashed while starting is replaced
        (``starting.start_actors``), an error of the sandbox's own set-up is raised at once."""
        start_actors(self.actors, lambda a: a.info.remote(), lambda i: self._replace(self.actors[i]), self.retries)

    def _spawn(self):
        return SandboxActor.options(max_concurrency=1000).remote(self.backend, self.slots)  # type: ignore[attr-defined]

    def _replace(self, dead) -> None:
        for i, a in enumerate(self.actors):
            if a is dead:
                log.warning("sandbox actor died; replacing it and retrying its requests")
                self.actors[i] = self._spawn()
                self.replaced += 1

    async def judge(self, problem: Problem, code: str, which: Which = "all",
                    output_bytes: int | None = None) -> Verdict:
        """``output_bytes``: the stdout/stderr cap of each run (default: the pool's)."""
        output_bytes = output_bytes or self.output_bytes
        loop = asyncio.get_running_loop()
        sem = self._sems.get(loop)
        if sem is None:
            sem = self._sems[loop] = asyncio.Semaphore(self.max_inflight)
        async with sem:
            reason = ""
            for _ in range(self.retries + 1):
                actor = self.actors[next(self._rr) % len(self.actors)]
                try:
                    return await asyncio.wait_for(actor.judge.remote(problem, code, which, output_bytes),
                                                  self.timeout_s)
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as e:
                    reason = f"sandbox actor died: {type(e).__name__}"
                    self._replace(actor)
                except TimeoutError:
                    reason = f"no verdict within {self.timeout_s} s"
            tests = selected_tests(problem, which)
            return verdict_from(tests, [{"infra_error": reason}] * len(tests))

    async def gather(self, items: Sequence[tuple[Problem, str]], which: Which = "all",
                     progress: Callable[[], None] | None = None) -> list[Verdict]:
        async def one(p, c):
            v = await self.judge(p, c, which)
            if progress:
                progress()
            return v

        return list(await asyncio.gather(*(one(p, c) for p, c in items)))

    def judge_many(self, items: Sequence[tuple[Problem, str]], which: Which = "all",
                   progress: Callable[[], None] | None = None) -> list[Verdict]:
        """Blocking form of ``gather`` for scripts and the CLI."""
        return asyncio.run(self.gather(items, which, progress))

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
