"""Beyond one machine, simulated on it: ``proctor train`` on a Ray cluster of a head and four worker
nodes (separate raylets on 127.0.0.1, ``tests/multinode_run.py``), the learner ranks and the engines
spread over different nodes, the weights pushed across them through the object store; then a worker
node removed mid-run with room elsewhere. A node lost with no room left is tested on a real cluster of
two raylets that share no disk (tests/test_ray_job.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def simulate(tiny_model_dir, tmp_path, *args) -> dict:
    out = tmp_path / "result.json"
    cmd = [sys.executable, str(ROOT / "tests" / "multinode_run.py"), "--model", str(tiny_model_dir),
           "--run", str(tmp_path / "run"), "--out", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_spread_run_puts_each_rank_and_engine_on_its_own_node(tiny_model_dir, tmp_path):
    res = simulate(tiny_model_dir, tmp_path, "learner.world_size=2", "rollout.engines=2", "run.iterations=1")
    assert res["error"] is None, res.get("traceback")
    placed = res["placement"]
    nodes = placed["learner"] + placed["engines"]
    assert placed["strategy"] == "spread" and len(nodes) == 4
    assert len(set(nodes)) == 4, f"bundles share a node: {placed}"
    assert all(res["nodes"][n].startswith("worker") for n in nodes)  # the head has no CPU to offer
    [row] = res["rows"]
    assert row["episodes"] == 4 and row["learner/steps"] >= 1
    assert row["push_s"] > 0 and row["engines_replaced"] == 0  # the push reached both engines' nodes
    assert res["checkpoint"]["iterations_done"] == 1


def test_a_worker_node_lost_mid_run_rebuilds_the_learner_from_its_checkpoint(tiny_model_dir, tmp_path):
    """The node of learner rank 1 is removed after iteration 1: rank 1 dies with it (and rank 0's
    collective with it breaks); its bundle is placed again on a node with room, the learner is rebuilt
    from the checkpoint of iteration 1 and the run ends complete."""
    res = simulate(tiny_model_dir, tmp_path, "--remove", "learner:1", "--after", "1", "learner.world_size=2",
                   "rollout.engines=2", "run.iterations=3", "run.checkpoint_every=1")
    assert res["removed"] and res["removed"]["name"].startswith("worker"), res
    assert res["error"] is None, res.get("traceback")
    rows = res["rows"]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert rows[-1]["learner_restarts"] == 1
    after = res["placement"]
    assert res["removed"]["node"] not in after["learner"] + after["engines"]  # placed again elsewhere
    assert res["checkpoint"]["iterations_done"] == 3

