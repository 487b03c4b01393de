"""``proctor bench learner [--episodes B] [--prompt P] [--reply R] [--iterations N] [--model M]``.

One learner iteration (reference and critic forwards, then forward/backward/step of actor and
critic; no critic under grpo) on the same synthetic batch under each layout, where a layout is
``ADVANTAGE:DTYPE:ZERO_STAGExWORKERS[:chunkN][:loraR][:padmask]`` (``--layouts``; ``chunkN`` sets
``learner.logprob_chunk_tokens``, 0 = the LM head on every action column with all logits kept;
``loraR`` trains LoRA adapters of rank R instead of the whole network; ``padmask`` passes the padding
mask to every forward, ``learner.padding_mask=always``, instead of the causal mask alone).
Reports per layout the median iteration time after a warm-up, the range, tokens/s, peak resident
memory of all workers together and the **model-FLOP utilisation**: the model FLOPs of the iteration
over (wall x this machine's matmul throughput in the layout's dtype, measured in the same run on a
2048 x 2048 matmul with the learner's threads). Model FLOPs count 2 per matmul parameter and token
for a forward and 4 for a backward (2 for a frozen weight under LoRA), each network pass
separately (reference, critic, actor); the
LM head counts only on the tokens whose log-probability the loss needs (the action tokens),
attention's quadratic term is left out, and recomputation (checkpointing) is not model work.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import proctor.cluster.ray_local  # noqa: F401  (before ray)
from proctor.bench import parse_with_config

DEFAULT_LAYOUTS = "gae:float32:0x1,gae:bfloat16:0x1,grpo:float32:0x1,grpo:bfloat16:0x1"


def synthetic(episodes: int, prompt: int, reply: int, vocab: int, seed: int = 0):
    from proctor.learner.batch import Sample

    rng = random.Random(seed)
    out = []
    for i in range(episodes):
        p = prompt + rng.randint(-prompt // 4, prompt // 4)       # mixed lengths, like real rollouts
        r = max(1, reply + rng.randint(-reply // 2, reply // 2))
        ids = [rng.randrange(vocab) for _ in range(p + r)]
        out.append(Sample(ids, [0] * p + [1] * r, [0.0] * p + [-2.0] * r, [p - 1], [(p, p + r)],
                          [rng.choice([1.0, -1.0])], version=0, id=f"synthetic/{i // 4}"))  # groups of 4
    return out


def matmul_gflops(dtype: str, threads: int, n: int = 2048, reps: int = 10, device: str = "cpu") -> float:
    """Best-of-``reps`` GFLOP/s of an n x n matmul in ``dtype`` on ``threads`` threads (on a CUDA
    ``device``: on the GPU, each timed between syncs)."""
    import torch

    from proctor.learner.model import DTYPES

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = (torch.randn(n, n, device=device).to(DTYPES[dtype]) for _ in range(2))
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    torch.set_num_threads(before)
    return 2 * n**3 / best / 1e9


def matmul_params(model_dir: str) -> dict[str, int]:
    """Parameters that multiply activations, per network: the policy's body and LM head, the critic's
    body (the backbone without the input embedding table, which is a lookup; a tied head counts as
    the head)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())       # tied weights once
    embed = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    body = total - embed - (0 if config.tie_word_embeddings else head)
    return {"body": body, "head": head, "total": total}


def iteration_flops(n: dict[str, int], tokens: int, action_tokens: int, lcfg) -> float:
    """Model FLOPs of one learner iteration (see the module docstring)."""
    policy = 2 * (n["body"] * tokens + n["head"] * action_tokens)    # one forward
    critic = 2 * n["body"] * tokens if lcfg.advantage == "gae" else 0
    prepare = critic + (policy if lcfg.kl_beta > 0 else 0) + (policy if lcfg.old_logprobs == "recompute" else 0)
    # A backward is 2x a forward (input and weight gradients); under LoRA the frozen weights need
    # only the input gradients (1x; the adapters' own FLOPs are left out). The critic trains in full.
    actor = policy * (2 if getattr(lcfg, "lora_rank", 0) else 3)
    return prepare + lcfg.ppo_epochs * (actor + 3 * critic)


OPTIONS = {"chunk": "logprob_chunk_tokens", "lora": "lora_rank"}


def parse_layout(spec: str) -> dict:
    """``ADVANTAGE:DTYPE:ZERO_STAGExWORKERS[:chunkN][:loraR][:padmask]`` -> learner config fields."""
    try:
        advantage, dtype, shape, *rest = spec.split(":")
        stage, workers = (int(x) for x in shape.split("x"))
        options = {}
        for opt in rest:
            if opt == "padmask":
                options["padding_mask"] = "always"
                continue
            key = next(k for k in OPTIONS if opt.startswith(k))
            options[OPTIONS[key]] = int(opt.removeprefix(key))
    except (ValueError, StopIteration):
        raise SystemExit(f"--layouts: {spec!r} is not ADVANTAGE:DTYPE:ZERO_STAGExWORKERS[:chunkN][:loraR][:padmask] "
                         f"(e.g. grpo:bfloat16:0x1, gae:float32:2x2:chunk0 or grpo:auto:0x1:lora16)") from None
    return {"advantage": advantage, "dtype": dtype, "zero_stage": stage, "world_size": workers, **options}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="proctor bench learner")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=384)
    ap.add_argument("--reply", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=2, help="timed iterations per layout (after 1 warm-up)")
    ap.add_argument("--layouts", default=DEFAULT_LAYOUTS,
                    help="ADVANTAGE:DTYPE:ZERO_STAGExWORKERS[:chunkN][:loraR][:padmask], comma separated (DTYPE may be auto)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None,
                    help="one learner worker in this process on this device (no Ray), beside a bare torch "
                         "forward+backward+AdamW of the same batch; default: Ray workers on this machine's CPU")
    ap.add_argument("--profile", action="store_true",
                    help="with --device: one more iteration per layout under torch.profiler; prints its costliest ops")
    args, console, cfg, model_dir = parse_with_config(ap, argv)
    from proctor.learner.model import resolve_dtype

    layouts = {spec: parse_layout(spec) for spec in args.layouts.split(",")}
    for layout in layouts.values():
        layout["dtype"] = resolve_dtype(layout["dtype"], args.device or "cpu")
    if args.device:
        return in_process(args, console, cfg, model_dir, layouts)

    from transformers import AutoConfig

    from proctor.cluster.ray_local import init_ray
    from proctor.learner.config import LearnerConfig
    from proctor.learner.group import LearnerGroup

    threads = 2
    peak = {dt: matmul_gflops(dt, threads) for dt in sorted({v["dtype"] for v in layouts.values()})}
    console.print(f"matmul 2048 x 2048 on {threads} threads: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    n = matmul_params(model_dir)
    import ray

    started = not ray.is_initialized()
    init_ray(num_cpus=2)
    batch = synthetic(args.episodes, args.prompt, args.reply, AutoConfig.from_pretrained(model_dir).vocab_size,
                      cfg.run.seed)
    tokens = sum(len(s.token_ids) for s in batch)
    action_tokens = sum(sum(s.action_mask) for s in batch)
    out = {}
    for spec, layout in layouts.items():
        workers = layout["world_size"]
        lcfg = LearnerConfig(**{**cfg.learner.model_dump(), **layout, "minibatch_size": args.episodes,
                                "ppo_epochs": 1, "threads_per_worker": max(1, threads // workers)})
        console.print(f"{spec}: {args.episodes} episodes, {tokens} tokens ({action_tokens} action tokens)")
        group = LearnerGroup(model_dir, lcfg, seed=cfg.run.seed, num_cpus_per_worker=threads / workers)
        group.train(batch)  # warm-up
        runs = [group.train(batch) for _ in range(args.iterations)]
        group.shutdown()
        times = [m["step_s"] for m in runs]
        wall = statistics.median(times)
        flops = iteration_flops(n, tokens, action_tokens, lcfg)
        out[spec] = {**layout, "logprob_chunk_tokens": lcfg.logprob_chunk_tokens, "lora_rank": lcfg.lora_rank,
                     "padding_mask": lcfg.padding_mask,
                     "trainable_params": runs[-1]["trainable_params"], "iteration_s": wall,
                     "iteration_s_range": [min(times), max(times)],
                     "tokens_per_s": statistics.median(m["tokens_per_s"] for m in runs),
                     "model_tflop": flops / 1e12, "achieved_gflops": flops / wall / 1e9,
                     "mfu": flops / wall / 1e9 / peak[lcfg.dtype],
                     "peak_rss_gib_all_workers": max(m["peak_rss_gib_all_workers"] for m in runs),
                     "padding_frac": runs[-1]["padding_frac"]}
        console.print(out[spec])
    base = next(iter(out.values()))
    for v in out.values():
        v["time_vs_first"] = v["iteration_s"] / base["iteration_s"]
    if started:
        ray.shutdown()
    print(json.dumps({"bench": "learner", "model": cfg.model.name, "episodes": args.episodes, "tokens": tokens,
                      "action_tokens": action_tokens, "matmul_params": n, "threads": threads,
                      "matmul_gflops": peak, "layouts": out}))
    return 0


def bare_iteration(model, optimizer, micro_batches: list) -> None:
    """Plain torch: next-token cross-entropy forward+backward over every micro-batch, one AdamW step."""
    import torch

    for ids, mask in micro_batches:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten(),
                                                 reduction="none")
        (loss * mask[:, 1:].flatten()).sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def micro_batches(batch, budget: int, device) -> list:
    """The batch's token ids padded into micro-batches of at most ``budget`` tokens (widths included)."""
    import torch

    rows = sorted((s.token_ids for s in batch), key=len)
    out, cur = [], []
    for ids in rows:
        if cur and (len(cur) + 1) * len(ids) > budget:
            out.append(cur)
            cur = []
        cur.append(ids)
    out.append(cur)
    padded = []
    for group in out:
        width = max(map(len, group))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in group], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in group], device=device)
        padded.append((ids, mask))
    return padded


def print_profile(console, fn, cuda: bool, rows: int = 30) -> None:
    """Run ``fn`` once under torch.profiler; print its costliest ops by their own device time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    console.print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60), soft_wrap=True)


def count_syncs(console, fn, rows: int = 8) -> int:
    """Run ``fn`` once under torch's CUDA sync debug mode; return how many times the host waited for the
    GPU (each a stall of the CPU's kernel queueing), and print the lines that waited most often."""
    import collections
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = collections.Counter(f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))
    console.print(f"host-device synchronisations in one iteration: {sum(sites.values())}; most frequent: "
                  + ", ".join(f"{k} x{v}" for k, v in sites.most_common(rows)))
    return sum(sites.values())


def in_process(args, console, cfg, model_dir: str, layouts: dict) -> int:
    """``--device``: each layout as one PPOWorker in this process, beside a bare torch
    forward+backward+AdamW of the same batch in the same dtype: the work-equivalent ratio scales the
    bare time by the iteration's model FLOPs over the bare pass's (6 per matmul parameter and token,
    the LM head on every token) and divides by the learner's time (1 = no overhead)."""
    import functools
    import gc

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from proctor.learner.config import LearnerConfig
    from proctor.learner.model import DTYPES
    from proctor.learner.worker import PPOWorker

    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    cuda = device.type == "cuda"
    threads = torch.get_num_threads()
    if cuda:
        peak = {dt: matmul_gflops(dt, threads, n=8192, device="cuda") for dt in {v["dtype"] for v in layouts.values()}}
        card = torch.cuda.get_device_name(0)
    else:
        peak = {dt: matmul_gflops(dt, threads) for dt in {v["dtype"] for v in layouts.values()}}
        card = "cpu"
    console.print(f"{card}: matmul " + ", ".join(f"{k} {v / 1e3:.1f} TFLOP/s" for k, v in peak.items()))
    n = matmul_params(model_dir)
    batch = synthetic(args.episodes, args.prompt, args.reply, AutoConfig.from_pretrained(model_dir).vocab_size,
                      cfg.run.seed)
    tokens = sum(len(s.token_ids) for s in batch)
    action_tokens = sum(sum(s.action_mask) for s in batch)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def reset_peak():
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib() -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if cuda else None

    def timed(fn) -> list[float]:
        fn()  # warm-up
        times = []
        for _ in range(args.iterations):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return times

    out = {}
    bare = {}
    for spec, layout in layouts.items():
        if layout["world_size"] != 1:
            raise SystemExit(f"--layouts: {spec!r}: --device runs one worker (ZERO_STAGEx1)")
        lcfg = LearnerConfig(**{**cfg.learner.model_dump(), **layout, "minibatch_size": args.episodes,
                                "ppo_epochs": 1})
        dtype = lcfg.dtype
        if dtype not in bare:  # the bare pass once per dtype
            reset_peak()
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[dtype]).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
            mbs = micro_batches(batch, lcfg.micro_batch_tokens, device)
            times = timed(functools.partial(bare_iteration, model, opt, mbs))
            wall = statistics.median(times)
            flops = 6 * (n["body"] + n["head"]) * tokens
            bare[dtype] = {"iteration_s": wall, "iteration_s_range": [min(times), max(times)],
                           "tokens_per_s": tokens / wall, "model_tflop": flops / 1e12,
                           "mfu": flops / wall / 1e9 / peak[dtype], "peak_gpu_gib": peak_gib()}
            console.print(f"bare torch {dtype}: {bare[dtype]}")
            del model, opt, mbs
        reset_peak()
        console.print(f"{spec}: {args.episodes} episodes, {tokens} tokens ({action_tokens} action tokens)")
        worker = PPOWorker(model_dir, lcfg, seed=cfg.run.seed, master_port=0)
        runs = []
        times = timed(functools.partial(lambda w, r: r.append(w.train(batch)), worker, runs))
        wall = statistics.median(times)
        syncs = count_syncs(console, functools.partial(worker.train, batch)) if cuda else None
        if args.profile:
            print_profile(console, functools.partial(worker.train, batch), cuda)
        flops = iteration_flops(n, tokens, action_tokens, lcfg)
        equivalent = bare[dtype]["iteration_s"] * flops / (bare[dtype]["model_tflop"] * 1e12)
        out[spec] = {**layout, "trainable_params": runs[-1]["trainable_params"], "iteration_s": wall,
                     "iteration_s_range": [min(times), max(times)], "tokens_per_s": tokens / wall,
                     "model_tflop": flops / 1e12, "mfu": flops / wall / 1e9 / peak[dtype],
                     "work_vs_bare": flops / (bare[dtype]["model_tflop"] * 1e12),
                     "ratio_vs_bare_work_equivalent": equivalent / wall, "peak_gpu_gib": peak_gib(),
                     "syncs_per_iteration": syncs,
                     "padding_frac": runs[-1]["padding_frac"]}
        console.print(out[spec])
        del worker
    print(json.dumps({"bench": "learner", "device": card, "model": cfg.model.name, "episodes": args.episodes,
                      "tokens": tokens, "action_tokens": action_tokens, "matmul_params": n,
                      "matmul_gflops": peak, "bare": bare, "layouts": out}))
    return 0


if __name__ == "__main__":  # python -m proctor.bench.learner: where the CLI's dependencies are not installed
    import sys

    sys.exit(main(sys.argv[1:]))
