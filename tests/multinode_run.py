"""``proctor train`` on a Ray cluster of several nodes simulated on this machine (loopback only).

    python tests/multinode_run.py --model DIR --run RUN_DIR --out RESULT.json [--workers 4]
        [--remove learner:1 --after 1] [key=value ...]

A head node with no CPUs of its own (the driver and the sandbox actors, which ask for none) and
``--workers`` worker nodes of one CPU each, every one a raylet of its own on 127.0.0.1; the run
reserves its learner ranks and engines with ``run.placement=spread`` (half a CPU each, so every bundle
can land on a node of its own and a lost bundle still finds room on another). With ``--remove
ROLE:I``, the worker node that holds learner rank I (or engine I) is removed, all its processes
killed, once the checkpoint holds ``--after`` iterations. The run's outcome, each placement and
the node that was removed go to ``--out`` as JSON; the tests in ``test_multinode.py`` read it.
What this cannot show: separate hosts (one file system, one loopback network, one clock).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import proctor.cluster.ray_local  # noqa: E402,F401  (before ray: loopback only)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--remove", default=None, help="learner:I or engines:I")
    p.add_argument("--after", type=int, default=1, help="remove once this many iterations are logged")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()

    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="proctor-multinode-")
    from ray.cluster_utils import Cluster

    from proctor.cluster.config import load_config
    from proctor.cluster.metrics import read_metrics
    from proctor.cluster.train import train

    node_args = {"node_ip_address": "127.0.0.1", "object_store_memory": 256 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(**node_args, num_cpus=1) for _ in range(a.workers)]
    names = {cluster.head_node.node_id: "head", **{n.node_id: f"worker{i}" for i, n in enumerate(workers)}}
    run = Path(a.run)
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [
        f"model.name={a.model}", f"run.ray_address={cluster.address}", "run.placement=spread",
        "run.learner_cpus=0.5", "run.engine_cpus=0.5", "run.placement_timeout_s=120", *a.overrides])
    result: dict = {"nodes": names, "removed": None, "error": None}

    def remove_when_due():
        role, index = a.remove.split(":")
        ckpt = run / "checkpoint" / "driver.json"
        while not ckpt.exists() or json.loads(ckpt.read_text() or "{}").get("iterations_done", 0) < a.after:
            time.sleep(0.2)
        placed = json.loads((run / "placement.json").read_text())
        target = placed[role][int(index)]
        result["placement_before"] = placed
        node = next(n for n in workers if n.node_id == target)
        cluster.remove_node(node, allow_graceful=False)
        result["removed"] = {"node": target, "name": names[target], "role": a.remove, "after": a.after,
                             "at": time.time()}

    if a.remove:
        threading.Thread(target=remove_when_due, daemon=True).start()
    try:
        result["summary"] = train(cfg, run)
    except BaseException as e:
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()
    result["rows"] = read_metrics(run) if (run / "metrics.jsonl").exists() else []
    placement = run / "placement.json"
    result["placement"] = json.loads(placement.read_text()) if placement.exists() else None
    ckpt = run / "checkpoint" / "driver.json"
    result["checkpoint"] = json.loads(ckpt.read_text()) if ckpt.exists() else None
    Path(a.out).write_text(json.dumps(result, indent=1, default=str))
    import ray

    ray.shutdown()
    cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
