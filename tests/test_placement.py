"""Placement groups: actors land in their own bundles; an unplaceable request is a clear error."""

import pytest

from proctor.cluster.placement import Placement, PlacementError


def test_actors_are_scheduled_into_their_bundles(ray_local):
    ray = ray_local

    @ray.remote
    class Where:
        def where(self):
            ctx = ray.get_runtime_context()
            return ctx.get_placement_group_id(), ctx.get_assigned_resources()

    p = Placement.reserve("pack", learners=2, learner_cpus=0.2, learner_gpus=0, engines=1, engine_cpus=0.1,
                          engine_gpus=0, timeout_s=60)
    try:
        assert len(p.learner) == 2 and len(p.engines) == 1
        actors = [Where.options(num_cpus=0.2, **o).remote() for o in p.learner]
        actors += [Where.options(num_cpus=0.1, **o).remote() for o in p.engines]
        got = ray.get([a.where.remote() for a in actors])
        assert {pg for pg, _ in got} == {p.group.id.hex()}
        assert [res["CPU"] for _, res in got] == pytest.approx([0.2, 0.2, 0.1])
        table = ray.util.placement_group_table(p.group)
        assert table["strategy"] == "PACK" and table["state"] == "CREATED"
        assert list(table["bundles"].values()) == [{"CPU": 0.2}, {"CPU": 0.2}, {"CPU": 0.1}]
        for a in actors:
            ray.kill(a)
    finally:
        p.release()


def test_unplaceable_request_names_what_it_asked_for(ray_local):
    with pytest.raises(PlacementError, match=r"not placed within 2 s.*'CPU': 64"):
        Placement.reserve("strict_pack", learners=1, learner_cpus=64, learner_gpus=0, engines=1, engine_cpus=1,
                          engine_gpus=0, timeout_s=2)


def test_unknown_strategy_and_empty_bundles_are_refused():
    with pytest.raises(PlacementError, match=r"run\.placement='diagonal'"):
        Placement.reserve("diagonal", learners=1, learner_cpus=1, learner_gpus=0, engines=1, engine_cpus=1,
                          engine_gpus=0)
    with pytest.raises(PlacementError, match="reserve some CPU or GPU"):
        Placement.reserve("pack", learners=1, learner_cpus=1, learner_gpus=0, engines=1, engine_cpus=0,
                          engine_gpus=0)
