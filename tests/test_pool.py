"""SandboxPool on a real local Ray: async judging, back-pressure, and actor loss without lost requests."""

import asyncio
import time

import pytest

from proctor.problems.format import Problem
from proctor.sandbox_pool.pool import SandboxPool

SLOW = Problem(id="slow", prompt="inc", kind="assert", entry_point="inc",
               public_tests=[{"code": "assert inc(1) == 2"}], private_tests=[{"code": "assert inc(2) == 3"}],
               time_limit_s=5.0, memory_mb=256)
GOOD = "import time\ndef inc(x):\n    time.sleep(0.05)\n    return x + 1\n"
BAD = "def inc(x):\n    return x\n"


@pytest.fixture(scope="module")
def pool(ray_local):
    p = SandboxPool(actors=2, slots=2)
    yield p
    p.shutdown()


def test_async_judging_matches_expectations(pool):
    items = [(SLOW, GOOD if i % 2 == 0 else BAD) for i in range(20)]
    verdicts = pool.judge_many(items)
    assert [v.verdict for v in verdicts] == ["pass" if i % 2 == 0 else "fail" for i in range(20)]


def test_back_pressure_bounds_in_flight(ray_local):
    pool = SandboxPool(actors=1, slots=2, max_inflight=3)

    async def run():
        tasks = [asyncio.create_task(pool.judge(SLOW, GOOD)) for _ in range(12)]
        peak = 0
        while not all(t.done() for t in tasks):
            sem = pool._sems.get(asyncio.get_running_loop())
            if sem is not None:
                peak = max(peak, pool.max_inflight - sem._value)
            await asyncio.sleep(0.005)
        return [t.result() for t in tasks], peak

    verdicts, peak = asyncio.run(run())
    again, _ = asyncio.run(run())  # a second event loop gets its own semaphore, not a bound one
    pool.shutdown()
    assert all(v.passed for v in again)
    assert all(v.passed for v in verdicts)
    assert peak == 3, "12 queued candidates should fill exactly the 3 in-flight places"


def test_killing_an_actor_mid_batch_loses_no_request(ray_local):
    import ray

    pool = SandboxPool(actors=1, slots=2, timeout_s=60)
    items = [(SLOW, GOOD if i % 3 else BAD) for i in range(40)]

    async def run():
        batch = asyncio.create_task(pool.gather(items))
        await asyncio.sleep(1.0)
        ray.kill(pool.actors[0], no_restart=True)
        return await batch

    t0 = time.perf_counter()
    verdicts = asyncio.run(run())
    pool.shutdown()
    assert len(verdicts) == 40
    assert [v.verdict for v in verdicts] == ["pass" if i % 3 else "fail" for i in range(40)], \
        [v.verdict for v in verdicts]
    assert pool.replaced >= 1
    assert time.perf_counter() - t0 < 60


def _pool_spawning(first_actor_cls):
    """A SandboxPool whose first actor is ``first_actor_cls`` (the rest are real); counts the spawns."""
    class Pool(SandboxPool):
        spawned = 0

        def _spawn(self):
            Pool.spawned += 1
            return first_actor_cls.remote() if Pool.spawned == 1 else super()._spawn()

    return Pool


def test_an_actor_whose_worker_dies_while_starting_is_replaced(start_up_stand_ins):
    pool = _pool_spawning(start_up_stand_ins.dies)(actors=1, slots=2)
    assert pool.replaced == 1 and type(pool).spawned == 2
    assert pool.judge_many([(SLOW, GOOD), (SLOW, BAD)])[0].verdict == "pass"
    pool.shutdown()


def test_a_sandbox_whose_set_up_fails_is_not_retried(ray_local, start_up_stand_ins):
    cls = _pool_spawning(start_up_stand_ins.fails)
    with pytest.raises(ray_local.exceptions.RayActorError, match="set-up failed"):
        cls(actors=1, slots=2)
    assert cls.spawned == 1
