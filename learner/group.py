"""W ``PPOWorker``s as Ray actors forming one torch.distributed group, driven like one object.

    group = LearnerGroup(model_dir, cfg, seed=0)
    metrics = group.train(samples)               # one PPO iteration over all workers
    engines.load(group.weights_ref(), version)   # one ray.put on rank 0, every engine loads the same reference
    group.save(path); group.load(path)

Samples are dealt to workers round-robin, so each gets the same count (required: every collective
must be entered by every rank) and a mix of lengths.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from proctor.learner.batch import Sample, SampleError, assign_group_advantages, informative
from proctor.learner.config import LearnerConfig


class LearnerStartTimeout(RuntimeError):
    """The learner workers could not be scheduled in time (no room in the cluster for them)."""


def free_port() -> int:
    """A TCP port free on every interface of this host (other ranks may connect from other hosts)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def learner_actor_class():
    """The Ray actor class (created lazily so that importing learner does not import ray)."""
    import ray

    from proctor.learner.worker import PPOWorker

    @ray.remote
    class LearnerActor:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs, self.worker = args, kwargs, None

        def rendezvous(self) -> tuple[str, int]:
            """Rank 0's address for the process group: its node's IP and a port free there."""
            return ray.util.get_node_ip_address(), free_port()

        def setup(self, master_addr: str, master_port: int) -> int:
            self.worker = PPOWorker(*self.args, master_addr=master_addr, master_port=master_port, **self.kwargs)
            return self.worker.steps

        def train(self, samples, queue=None):
            """``queue``: a ``ray.util.queue.Queue`` that gets (minibatches done, total) after each step."""
            return self.worker.train(samples, None if queue is None else lambda d, t: queue.put_nowait((d, t)))

        def weights_ref(self, dtype: str = "same"):
            # Wrapped in a list so the caller gets the reference itself, not the resolved arrays.
            return self.worker.export_weights(lambda state: [ray.put(state)], dtype)

        def adapter_ref(self):
            return self.worker.export_adapter(lambda files: [ray.put(files)])

        def save(self, path: str):
            return self.worker.save(path)

        def prune(self, path: str, tag: str):
            return self.worker.prune(path, tag)

        def save_policy(self, path: str):
            return self.worker.save_policy(path)

        def load(self, path: str, tag: str | None = None):
            return self.worker.load(path, tag)

        def sees_storage(self, location: str, token: str) -> tuple[bool, str]:
            """Whether this rank's node reads the probe the driver wrote at ``location``, and which node."""
            from proctor.learner.storage import Storage

            return Storage(location).sees(token), ray.get_runtime_context().get_node_id()

        def state_digest(self):
            return self.worker.state_digest()

        def steps(self) -> int:
            return self.worker.steps

        def dtype(self) -> str:
            return self.worker.cfg.dtype

        def has_reference(self) -> bool:
            return self.worker.ref is not None

    return LearnerActor


class LearnerGroup:
    def __init__(self, model_dir: str | os.PathLike, cfg: LearnerConfig, *, seed: int = 0,
                 critic_dir: str | os.PathLike | None = None,
                 num_cpus_per_worker: float = 1, num_gpus_per_worker: float = 0, pad_id: int | None = None,
                 actor_options: list[dict] | None = None, start_timeout_s: float | None = None):
        """``actor_options[r]``: extra Ray options for rank r (e.g. a placement-group bundle);
        ``start_timeout_s``: how long the workers may take to be scheduled and started (None: no limit;
        a bundle whose node is gone waits until the cluster has room for it again)."""
        import ray

        if cfg.minibatch_size % cfg.world_size:
            raise ValueError(f"learner.minibatch_size={cfg.minibatch_size} does not split over "
                             f"learner.world_size={cfg.world_size} workers")
        if actor_options is not None and len(actor_options) != cfg.world_size:
            raise ValueError(f"{len(actor_options)} actor_options for {cfg.world_size} learner workers")
        self.cfg = cfg
        self._progress: Any = None  # the queue of rank 0's minibatch progress, made at the first train(progress=...)
        actor_cls = learner_actor_class()
        self.workers = [actor_cls.options(num_cpus=num_cpus_per_worker, num_gpus=num_gpus_per_worker,
                                          **(actor_options[r] if actor_options else {}))
                        .remote(model_dir, cfg, rank=r, world_size=cfg.world_size, seed=seed,
                                critic_dir=critic_dir, pad_id=pad_id)
                        for r in range(cfg.world_size)]
        # The group meets at rank 0's node (another host on a cluster), then every rank joins at once.
        try:
            ray.get([w.__ray_ready__.remote() for w in self.workers], timeout=start_timeout_s)  # all scheduled
            addr, port = ray.get(self.workers[0].rendezvous.remote())
            self._gather([w.setup.remote(addr, port) for w in self.workers])  # surfaces init errors here
        except ray.exceptions.GetTimeoutError:
            self.shutdown()
            raise LearnerStartTimeout(
                f"the learner workers were not scheduled within {start_timeout_s:.0f} s: the cluster has no room for "
                f"{cfg.world_size} worker(s) of {num_cpus_per_worker} CPU / {num_gpus_per_worker} GPU (or their "
                f"placement-group bundles, whose node may be gone); cluster {ray.cluster_resources()}, free "
                f"{ray.available_resources()}") from None
        except BaseException:
            self.shutdown()  # no half-built group left holding its bundles
            raise
        self.dtype = ray.get(self.workers[0].dtype.remote())  # learner.dtype=auto resolved on the worker's device

    def _all(self, method: str, *args):
        return self._gather([getattr(w, method).remote(*args) for w in self.workers])

    def _gather(self, futures: list, poll: Callable[[], None] | None = None) -> list:
        """``ray.get`` over the ranks, failing fast: the first rank to fail raises at once (the others
        may be blocked in a collective with it), and a rank's error that a dead peer caused (a broken
        collective) is raised as that peer's death (``RayActorError``), which the driver recovers from.
        ``poll`` is called about once a second while the ranks work."""
        import ray

        pending = list(futures)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=None if poll is None else 1.0)
            if poll is not None:
                poll()
            if not ready:
                continue
            try:
                ray.get(ready[0])
            except ray.exceptions.RayActorError:
                raise
            except ray.exceptions.RayTaskError as e:
                for w in self.workers:
                    try:
                        ray.get(w.steps.remote(), timeout=30)
                    except ray.exceptions.RayActorError as dead:
                        raise dead from e
                    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayTaskError):
                        pass  # alive: blocked in a collective, or failed on its own
                raise
        return ray.get(list(futures))

    def shard(self, samples: list[Sample]) -> list[list[Sample]]:
        w = self.cfg.world_size
        if len(samples) % w:
            raise SampleError(f"a batch of {len(samples)} episodes does not split evenly over {w} learner "
                              f"workers: make rollout batches a multiple of learner.world_size")
        return [samples[r::w] for r in range(w)]

    def train(self, samples: list[Sample], progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
        """One update on a rollout batch. Returns the workers' metrics plus what was left out and why:
        ``skipped_uniform`` (``skip_uniform_groups``) and ``dropped_uneven`` (the last few episodes
        when the batch does not split evenly over the workers, which must run the same steps).
        ``progress(done, total)``: rank 0's minibatches, as they finish (through a Ray queue)."""
        left_out = {"episodes_in": len(samples), "skipped_uniform": 0}
        if self.cfg.advantage != "gae":  # groups (a problem's episodes) span workers: whole batch here
            assign_group_advantages(samples, self.cfg.advantage, self.cfg.negative_advantage_scale)
            if self.cfg.skip_uniform_groups:
                kept = informative(samples)
                left_out["skipped_uniform"] = len(samples) - len(kept)
                samples = kept
        left_out["dropped_uneven"] = len(samples) % self.cfg.world_size
        samples = samples[: len(samples) - left_out["dropped_uneven"]]
        left_out["episodes_trained"] = len(samples)
        if not samples:
            return left_out
        shards = self.shard(samples)
        if progress is None:
            return {**self._gather([w.train.remote(s) for w, s in zip(self.workers, shards)])[0], **left_out}
        if self._progress is None:  # one small queue actor for the group's life
            from ray.util.queue import Queue

            self._progress = Queue(actor_options={"num_cpus": 0})
        queue = self._progress

        def poll():
            if n := queue.qsize():
                for done, total in queue.get_nowait_batch(n):
                    progress(done, total)

        futures = [w.train.remote(s, queue if r == 0 else None) for r, (w, s) in enumerate(zip(self.workers, shards))]
        stats = self._gather(futures, poll)[0]
        poll()
        return {**stats, **left_out}

    def weights_ref(self, dtype: str | None = None):
        """Reference to the actor's full weights in the object store (one copy, made on rank 0)."""
        refs = self._all("weights_ref", dtype or self.cfg.push_dtype)
        return refs[0][0]

    def adapter_ref(self):
        """Reference to the actor's LoRA adapter (peft's files as bytes) in the object store, made on rank 0."""
        return self._all("adapter_ref")[0][0]

    def save(self, path: str) -> str:
        """A checkpoint at ``path`` (a local path or a ``learner.storage`` URI), each rank writing its part;
        returns its tag. The older checkpoints there stay until ``prune``."""
        return self._all("save", str(path))[0]

    def prune(self, path: str, tag: str) -> None:
        """Keep only checkpoint ``tag`` at ``path`` (each holds weights + optimizer state: GBs)."""
        import ray

        ray.get(self.workers[0].prune.remote(str(path), tag))

    def check_storage(self, location: str, token: str) -> None:
        """Raise ``StorageError`` unless every rank reads the probe ``token`` the driver wrote at ``location``."""
        from proctor.learner.storage import StorageError

        for rank, (seen, node) in enumerate(self._all("sees_storage", location, token)):
            if not seen:
                raise StorageError(
                    f"learner rank {rank} (node {node[:8]}) does not see run.storage={location!r} as the driver does: "
                    "its node has its own disk there. Set run.storage to a location every node reaches (s3://..., "
                    "gs://..., or a path on a shared mount)")

    def load(self, path: str, tag: str | None = None) -> None:
        self._all("load", str(path), tag)

    def save_policy(self, path: str) -> str:
        """The actor as a HF model dir at ``path`` (loadable by transformers, vLLM, ``proctor eval``)."""
        return self._all("save_policy", str(path))[0]

    def state_digests(self) -> list[dict[str, float]]:
        return self._all("state_digest")

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)
        self.workers = []
        if self._progress is not None:
            self._progress.shutdown(force=True)
            self._progress = None
