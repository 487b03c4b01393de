"""``proctor bench weight-sync [--engines R] [--repeats N] [--dtype same|bfloat16] [--model M]``.

The learner's weights to R vLLM EngineActors, against a plain memcpy of the same bytes, in one run:
(a) push: the learner gathers its full weights, ``ray.put``s them once (one copy into the object
store), and every engine fetches the reference (zero-copy) and loads it through vLLM's
``reload_weights``; ``transport`` = push minus the engines' own load time;
(b) memcpy: ``np.copyto`` of the same arrays into preallocated buffers, in this process.
Reports the median of ``--repeats`` pushes (after one warm-up), the range, and the ratios
push/memcpy and transport/memcpy (goal <= 2x). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from rich.progress import track

import cluster.ray_local  # noqa: F401  (before ray)
from bench import parse_with_config


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="proctor bench weight-sync")
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", choices=["same", "bfloat16"], default="same")
    args, console, cfg, model_dir = parse_with_config(ap, argv)

    import numpy as np

    from cluster.ray_local import init_ray
    from learner.group import LearnerGroup
    from rollout.engine import engine_actor_class

    ray = init_ray(num_cpus=2)
    console.print(f"learner (ZeRO {cfg.learner.zero_stage}) and {args.engines} engines on {model_dir}")
    group = LearnerGroup(model_dir, cfg.learner.model_copy(update={"world_size": 1}), seed=cfg.run.seed,
                         num_cpus_per_worker=0.5)
    rollout = cfg.rollout.model_copy(update={"kv_cache_gib": 1})
    engines = [engine_actor_class().options(num_cpus=0.1).remote(model_dir, rollout) for _ in range(args.engines)]
    ray.get([e.stats.remote() for e in engines])

    group.push_weights(engines, version=0, dtype=args.dtype)  # warm-up
    pushes = [group.push_weights(engines, version=i + 1, dtype=args.dtype)
              for i in track(range(args.repeats), description="push", console=console)]

    state = ray.get(group.weights_ref(args.dtype))
    nbytes = sum(a.nbytes for a in state.values())
    dst = {k: np.empty_like(a) for k, a in state.items()}
    copies = []
    for _ in range(args.repeats + 1):
        t = time.perf_counter()
        for k, a in state.items():
            np.copyto(dst[k], a)
        copies.append(time.perf_counter() - t)
    copies = copies[1:]

    def med(xs):
        return statistics.median(xs)

    push = [p["total_s"] for p in pushes]
    transport = [p["total_s"] - p["engine_load_s"] for p in pushes]
    memcpy = med(copies)
    result = {
        "bench": "weight-sync", "model": cfg.model.name, "engines": args.engines, "dtype": args.dtype,
        "bytes": nbytes, "repeats": args.repeats,
        "push_s": med(push), "push_s_range": [min(push), max(push)],
        "gather_put_s": med([p["gather_put_s"] for p in pushes]),
        "engine_load_s": med([p["engine_load_s"] for p in pushes]),
        "transport_s": med(transport), "transport_s_range": [min(transport), max(transport)],
        "memcpy_s": memcpy, "memcpy_s_range": [min(copies), max(copies)],
        "memcpy_gb_s": nbytes / memcpy / 1e9,
        "ratio_push_vs_memcpy": med(push) / memcpy,
        "ratio_transport_vs_memcpy": med(transport) / memcpy,
    }
    group.shutdown()
    for e in engines:
        ray.kill(e)
    ray.shutdown()
    print(json.dumps(result))
    return 0
