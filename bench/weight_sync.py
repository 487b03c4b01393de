"""``proctor bench weight-sync [--engines R] [--repeats N] [--dtype same|bfloat16] [--lora RANK] [--model M]``.

The learner's weights to R vLLM engines, against a plain memcpy of the same bytes, in one run:
(a) push, the path ``proctor train`` runs: ``engines.load(learner.weights_ref(), version)``: the
learner gathers its full weights and ``ray.put``s them once (one copy into the object store), and
every engine of the ``EngineGroup`` fetches the reference (zero-copy) and loads it through vLLM's
``reload_weights``; ``transport`` = push minus the slowest engine's own load time;
(b) memcpy: ``np.copyto`` of the same arrays into preallocated buffers, in this process.
Reports the median of ``--repeats`` pushes (after one warm-up), the range, and the ratios
push/memcpy and transport/memcpy (goal <= 2x).
With ``--lora RANK`` the learner trains LoRA adapters of that rank, (a) pushes the merged network as
above, and then (c) pushes the adapter alone (peft's files, ``learner.adapter_ref()``) to engines
started with ``rollout.max_lora_rank``, which serve it through vLLM's ``LoRARequest``: bytes and
times of both, and their ratios. With ``--device cpu|cuda`` (no Ray or vLLM needed): the learner's own part of the push alone, one
worker in this process on that device: (d) ``export_weights`` into host memory (on a GPU: one pinned
buffer per dtype, one sync), and with Ray installed ``export_weights(ray.put)``, beside (e) one bulk
copy of the same bytes from one contiguous device buffer into one preallocated (pinned) host buffer:
the bus speed. Ratio export/bulk (goal <= 2x).
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from rich.progress import track

import proctor.cluster.ray_local  # noqa: F401  (before ray)
from proctor.bench import parse_with_config


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="proctor bench weight-sync")
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", choices=["same", "bfloat16"], default="same")
    ap.add_argument("--lora", type=int, default=0, metavar="RANK", help="LoRA adapters of this rank: also push them alone")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None,
                    help="the learner's export alone, one worker in this process on this device, beside one "
                         "bulk copy of the same bytes to (pinned) host memory; no engines")
    args, console, cfg, model_dir = parse_with_config(ap, argv)
    if args.device:
        return export_on_device(args, console, cfg, model_dir)

    import numpy as np

    from proctor.cluster.ray_local import init_ray
    from proctor.learner.group import LearnerGroup
    from proctor.rollout.engine_group import EngineGroup

    ray = init_ray(num_cpus=2)
    console.print(f"learner (ZeRO {cfg.learner.zero_stage}) and {args.engines} engines on {model_dir}")
    group = LearnerGroup(model_dir, cfg.learner.model_copy(update={"world_size": 1, "lora_rank": args.lora}),
                         seed=cfg.run.seed, num_cpus_per_worker=0.5)
    rollout = cfg.rollout.model_copy(update={"kv_cache_gib": 1, "engines": args.engines})

    def pushes(make_ref, served_rank: int, label: str) -> list[dict[str, float]]:
        engines = EngineGroup(model_dir, rollout.model_copy(update={"max_lora_rank": served_rank}),
                              seed=cfg.run.seed, num_cpus=0.1)
        engines.wait_ready()

        def push(version: int) -> dict[str, float]:
            t0 = time.perf_counter()
            ref = make_ref()
            t1 = time.perf_counter()
            load = engines.load(ref, version)
            t2 = time.perf_counter()
            return {"gather_put_s": t1 - t0, "engine_load_s": load, "total_s": t2 - t0}

        push(0)  # warm-up
        out = [push(i + 1) for i in track(range(args.repeats), description=label, console=console)]
        engines.shutdown()
        return out

    pushes_full = pushes(lambda: group.weights_ref(args.dtype), 0, "push")

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

    push = [p["total_s"] for p in pushes_full]
    transport = [p["total_s"] - p["engine_load_s"] for p in pushes_full]
    memcpy = med(copies)
    result = {
        "bench": "weight-sync", "model": cfg.model.name, "engines": args.engines, "dtype": args.dtype,
        "bytes": nbytes, "repeats": args.repeats,
        "push_s": med(push), "push_s_range": [min(push), max(push)],
        "gather_put_s": med([p["gather_put_s"] for p in pushes_full]),
        "engine_load_s": med([p["engine_load_s"] for p in pushes_full]),
        "transport_s": med(transport), "transport_s_range": [min(transport), max(transport)],
        "memcpy_s": memcpy, "memcpy_s_range": [min(copies), max(copies)],
        "memcpy_gb_s": nbytes / memcpy / 1e9,
        "ratio_push_vs_memcpy": med(push) / memcpy,
        "ratio_transport_vs_memcpy": med(transport) / memcpy,
    }
    if args.lora:
        adapter = pushes(group.adapter_ref, args.lora, "adapter push")
        files = ray.get(group.adapter_ref())
        lora_push = [p["total_s"] for p in adapter]
        result["lora"] = {
            "rank": args.lora, "bytes": sum(a.nbytes for a in files.values()),
            "push_s": med(lora_push), "push_s_range": [min(lora_push), max(lora_push)],
            "gather_put_s": med([p["gather_put_s"] for p in adapter]),
            "engine_load_s": med([p["engine_load_s"] for p in adapter]),
        }
        result["ratio_bytes_adapter_vs_merged"] = result["lora"]["bytes"] / nbytes
        result["ratio_push_adapter_vs_merged"] = med(lora_push) / med(push)
        console.print(f"adapter: {result['lora']['bytes'] / 1e6:.1f} MB in {med(lora_push):.3f} s; merged network: "
                      f"{nbytes / 1e6:.1f} MB in {med(push):.3f} s")
    group.shutdown()
    ray.shutdown()
    print(json.dumps(result))
    return 0


def export_on_device(args, console, cfg, model_dir: str) -> int:
    """``--device``: the worker's export against one bulk device-to-host copy of the same bytes."""
    import importlib.util

    import torch

    from proctor.learner.model import resolve_dtype
    from proctor.learner.worker import PPOWorker

    cuda = args.device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    lcfg = cfg.learner.model_copy(update={"world_size": 1, "lora_rank": 0, "advantage": "grpo",
                                          "dtype": resolve_dtype(cfg.learner.dtype, args.device)})
    worker = PPOWorker(model_dir, lcfg, seed=cfg.run.seed, master_port=0)
    card = torch.cuda.get_device_name(0) if cuda else "cpu"
    console.print(f"{card}: export of {model_dir} ({lcfg.dtype}, ZeRO {lcfg.zero_stage})")

    def timed(fn) -> list[float]:
        fn()  # warm-up (first use allocates the pinned buffers)
        times = []
        for _ in track(range(args.repeats), description="export", console=console):
            sync()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return times

    nbytes = worker.export_weights(lambda state: sum(a.nbytes for a in state.values()), args.dtype)
    export = timed(lambda: worker.export_weights(lambda state: None, args.dtype))
    params = [p.detach() for p in worker.actor.module.parameters()]
    if args.dtype == "bfloat16":
        params = [p.to(torch.bfloat16) for p in params]
    flat = {dt: torch.cat([p.reshape(-1) for p in params if p.dtype == dt]) for dt in {p.dtype for p in params}}
    host = {dt: torch.empty(t.numel(), dtype=dt, pin_memory=cuda) for dt, t in flat.items()}

    def bulk():
        for dt, t in flat.items():
            host[dt].copy_(t, non_blocking=cuda)
        sync()

    copies = timed(bulk)
    bulk_bytes = sum(t.numel() * t.element_size() for t in flat.values())
    med = statistics.median
    result = {"bench": "weight-sync", "device": card, "model": cfg.model.name, "dtype": args.dtype,
              "learner_dtype": lcfg.dtype, "bytes": nbytes, "bulk_bytes": bulk_bytes, "repeats": args.repeats,
              "export_s": med(export), "export_s_range": [min(export), max(export)],
              "bulk_copy_s": med(copies), "bulk_copy_s_range": [min(copies), max(copies)],
              "bulk_gb_s": bulk_bytes / med(copies) / 1e9,
              "ratio_export_vs_bulk": med(export) / med(copies)}
    if importlib.util.find_spec("ray") is not None:
        import ray

        from proctor.cluster.ray_local import init_ray

        started = not ray.is_initialized()
        init_ray(num_cpus=2)
        put = timed(lambda: worker.export_weights(ray.put, args.dtype))
        result.update({"export_put_s": med(put), "export_put_s_range": [min(put), max(put)],
                       "ratio_export_put_vs_bulk": med(put) / med(copies)})
        if started:  # a Ray this process had already started stays up
            ray.shutdown()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":  # python -m proctor.bench.weight_sync: where the CLI's dependencies are not installed
    import sys

    sys.exit(main(sys.argv[1:]))
