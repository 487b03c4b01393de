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

import cluster.ray_local  # noqa: F401  (before ray)
from bench import parse_with_config

DEFAULT_LAYOUTS = "gae:float32:0x1,gae:bfloat16:0x1,grpo:float32:0x1,grpo:bfloat16:0x1"


def synthetic(episodes: int, prompt: int, reply: int, vocab: int, seed: int = 0):
    from learner.batch import Sample

    rng = random.Random(seed)
    out = []
    for i in range(episodes):
        p = prompt + rng.randint(-prompt // 4, prompt // 4)       # mixed lengths, like real rollouts
        r = max(1, reply + rng.randint(-reply // 2, reply // 2))
        ids = [rng.randrange(vocab) for _ in range(p + r)]
        out.append(Sample(ids, [0] * p + [1] * r, [0.0] * p + [-2.0] * r, [p - 1], [(p, p + r)],
                          [rng.choice([1.0, -1.0])], version=0, id=f"synthetic/{i // 4}"))  # groups of 4
    return out


def matmul_gflops(dtype: str, threads: int, n: int = 2048, reps: int = 10) -> float:
    """Best-of-``reps`` GFLOP/s of an n x n matmul in ``dtype`` on ``threads`` threads."""
    import torch

    from learner.model import DTYPES

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = (torch.randn(n, n).to(DTYPES[dtype]) for _ in range(2))
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
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
    args, console, cfg, model_dir = parse_with_config(ap, argv)
    from learner.model import resolve_dtype

    layouts = {spec: parse_layout(spec) for spec in args.layouts.split(",")}
    for layout in layouts.values():  # this bench runs the learner on this machine's CPU
        layout["dtype"] = resolve_dtype(layout["dtype"], "cpu")

    from transformers import AutoConfig

    from cluster.ray_local import init_ray
    from learner.config import LearnerConfig
    from learner.group import LearnerGroup

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
