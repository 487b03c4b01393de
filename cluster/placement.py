"""Placement groups: the learner workers and the engines reserved together, all or nothing.

On a cluster, ``run.placement: pack`` keeps the learner ranks (and the engines) on as few nodes as
possible, so the process group and the weight push stay inside a node where they can; ``spread``
puts one bundle per node where it can; ``strict_pack`` demands a single node. Each actor is
scheduled into its own bundle; a replaced engine takes over the bundle of the one that died.
``none`` (the local default) schedules by CPU fractions alone.
"""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = {"pack": "PACK", "spread": "SPREAD", "strict_pack": "STRICT_PACK"}


class PlacementError(RuntimeError):
    pass


def bundle(cpus: float, gpus: float) -> dict[str, float]:
    return {k: v for k, v in (("CPU", cpus), ("GPU", gpus)) if v > 0}


@dataclass
class Placement:
    group: object                 # ray.util.placement_group.PlacementGroup
    learner: list[dict]           # Ray options per learner rank
    engines: list[dict]           # Ray options per engine

    @classmethod
    def reserve(cls, strategy: str, *, learners: int, learner_cpus: float, learner_gpus: float, engines: int,
                engine_cpus: float, engine_gpus: float, timeout_s: float = 300) -> Placement:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if strategy not in STRATEGIES:
            raise PlacementError(f"run.placement={strategy!r}: choose one of none, {', '.join(STRATEGIES)}")
        wanted = [bundle(learner_cpus, learner_gpus)] * learners + [bundle(engine_cpus, engine_gpus)] * engines
        if not all(wanted):
            raise PlacementError("run.placement needs every learner and engine to reserve some CPU or GPU "
                                 "(run.learner_cpus / run.engine_cpus / *_gpus are 0)")
        pg = placement_group(wanted, strategy=STRATEGIES[strategy], name="proctor")
        ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
        if not ready:
            ray.util.remove_placement_group(pg)
            raise PlacementError(
                f"placement group ({strategy}) not placed within {timeout_s:.0f} s: it asks for {learners} learner "
                f"bundle(s) {wanted[0]} and {engines} engine bundle(s) {wanted[-1]}; the cluster has "
                f"{ray.cluster_resources()} ({ray.available_resources()} free). Lower run.*_cpus / *_gpus or add nodes.")
        opts = [{"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)}
                for i in range(len(wanted))]
        return cls(pg, opts[:learners], opts[learners:])

    def nodes(self) -> dict[str, list[str]]:
        """The Ray node id that holds each learner rank's and each engine's bundle (now: a bundle of a
        node that died is placed again elsewhere when the cluster has room)."""
        import ray

        where = ray.util.placement_group_table(self.group).get("bundles_to_node_id", {})
        ids = [where.get(i, "") for i in range(len(self.learner) + len(self.engines))]
        return {"learner": ids[:len(self.learner)], "engines": ids[len(self.learner):]}

    def release(self) -> None:
        import ray

        ray.util.remove_placement_group(self.group)
