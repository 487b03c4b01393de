"""Engines as Ray actors: ``EngineActor`` (one ``rollout.engine.Engine`` in an actor) and
``EngineGroup``, R of them behind one generator that survives engine deaths and carries the weight
pushes to every engine."""

from __future__ import annotations

import itertools
import os
import warnings
from typing import Any

from proctor.rollout.config import RolloutConfig
from proctor.rollout.engine import GREEDY, Engine, EngineDead
from proctor.rollout.types import Generation, SamplingSpec


def engine_actor_class():
    """The Ray actor class (created lazily so that importing rollout does not import ray)."""
    import ray

    @ray.remote(num_cpus=0)
    class EngineActor:
        def __init__(self, model_dir: str | os.PathLike, cfg: RolloutConfig | None = None, seed: int = 0):
            # os.fspath here, on the engine's node: a model the driver shipped lands in a local cache
            self.engine = Engine(os.fspath(model_dir), cfg, seed)

        async def generate(self, prompt_ids: list[int], spec: SamplingSpec = GREEDY) -> list[Generation]:
            return await self.engine.generate(prompt_ids, spec)

        async def update_weights(self, state, version: int) -> float:
            # A state dict put in the object store arrives resolved (numpy views, zero-copy); one
            # wrapped in a list arrives as a reference and is fetched here.
            if isinstance(state, list) and len(state) == 1 and isinstance(state[0], ray.ObjectRef):
                state = await state[0]
            return await self.engine.update_weights(state, version)

        def stats(self) -> dict:
            return self.engine.stats()

        def reset_stats(self) -> None:
            self.engine.reset_stats()

    return EngineActor


class EngineUnavailable(RuntimeError):
    """An engine died and no replacement could start in time."""


class EngineGroup:
    """R EngineActors behind one ``Generator`` that survives engine deaths: a request whose engine
    died is retried on a replacement (same model and seed, loaded with the last pushed weights
    before it serves anything), so the episodes waiting on it carry on."""

    def __init__(self, model_dir: str | os.PathLike, cfg: RolloutConfig, *, seed: int = 0, num_cpus: float = 1,
                 num_gpus: float = 0, retries: int = 2, actor_options: list[dict] | None = None,
                 replace_timeout_s: float | None = None):
        """``actor_options[i]``: extra Ray options for engine i (e.g. its placement-group bundle,
        which a replacement of engine i takes over). ``replace_timeout_s``: how long a request waits
        for a replacement engine to start and load the weights (None: no limit); past it the request
        raises ``EngineUnavailable`` (its node is gone and the cluster has no room for it)."""
        if actor_options is not None and len(actor_options) != cfg.engines:
            raise ValueError(f"{len(actor_options)} actor_options for {cfg.engines} engines")
        self._cls = engine_actor_class()
        # Ray gives an actor OMP_NUM_THREADS = its whole CPUs (at least 1), which vLLM's CPU kernels and torch
        # follow; the engine sets its own count when the config names one.
        threads = {"runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(cfg.threads_per_engine)}}} \
            if cfg.threads_per_engine else {}
        self._options = [dict(num_cpus=num_cpus, num_gpus=num_gpus, **threads,
                              **(actor_options[i] if actor_options else {})) for i in range(cfg.engines)]
        self._args = (model_dir, cfg)
        self.seed, self.retries, self.replace_timeout_s = seed, retries, replace_timeout_s
        self.actors = [self._spawn(i) for i in range(cfg.engines)]
        self._ready: dict[int, Any] = {}          # engine index -> ref of its pending weight load
        self._weights: tuple | None = None        # (object ref, version) of the last push
        self._rr = itertools.count()
        self.replaced = 0

    def _spawn(self, i: int):
        return self._cls.options(**self._options[i]).remote(*self._args, self.seed + i)

    def wait_ready(self) -> None:
        """Wait until every engine has started. One whose worker process crashed while starting is
        replaced, up to ``retries`` times; an error raised while building the engine (a bad model
        dir, too little memory) is raised at once (``sandbox_pool.starting.start_actors``)."""
        from proctor.sandbox_pool.starting import start_actors

        start_actors(self.actors, lambda a: a.stats.remote(), lambda i: self._replace(i, self.actors[i]), self.retries)

    def load(self, weights_ref, version: int) -> float:
        """Every engine loads the weights behind ``weights_ref`` (fetched from the object store,
        never copied here); returns the slowest engine's load time in seconds. An engine that dies
        while loading (its process killed, e.g. by Ray's memory monitor) is replaced, and the
        replacement loads these weights before it serves anything."""
        import ray

        self._weights = (weights_ref, version)
        actors = list(self.actors)
        refs = [a.update_weights.remote([weights_ref], version) for a in actors]
        seconds = []
        for i, (actor, ref) in enumerate(zip(actors, refs)):
            try:
                seconds.append(ray.get(ref))
            except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError, EngineDead):
                self._replace(i, actor)
        return max(seconds, default=0.0)

    async def generate(self, prompt_ids: list[int], spec: SamplingSpec) -> list[Generation]:
        import ray

        for attempt in range(self.retries + 1):
            i = next(self._rr) % len(self.actors)
            actor = self.actors[i]
            try:
                if i in self._ready:
                    await self._until_ready(i)
                return await actor.generate.remote(prompt_ids, spec)
            except (ray.exceptions.RayActorError, EngineDead):  # the actor died, or its vLLM engine did
                if attempt == self.retries:
                    raise
                self._replace(i, actor)
        raise AssertionError("unreachable")

    async def _until_ready(self, i: int) -> None:
        import asyncio

        try:
            await asyncio.wait_for(asyncio.wrap_future(self._ready[i].future()), self.replace_timeout_s)
        except TimeoutError:
            raise EngineUnavailable(f"engine {i} died and its replacement did not start within {self.replace_timeout_s:.0f} s "
                                    "(its node is gone and the cluster has no room for it)") from None

    def _replace(self, i: int, dead) -> None:
        if self.actors[i] is not dead:  # another request already replaced it
            return
        import ray

        warnings.warn(f"engine {i} died; starting a replacement", RuntimeWarning, stacklevel=2)
        ray.kill(dead)  # a live actor whose vLLM engine failed still holds its memory
        new = self._spawn(i)
        self.actors[i] = new
        self.replaced += 1
        if self._weights is not None:
            ref, version = self._weights
            self._ready[i] = new.update_weights.remote([ref], version)
        else:
            self._ready.pop(i, None)

    def stats(self) -> list[dict]:
        import ray

        return ray.get([a.stats.remote() for a in self.actors])

    def reset_stats(self) -> None:
        import ray

        ray.get([a.reset_stats.remote() for a in self.actors])

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []
