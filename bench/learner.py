"""``proctor bench learner [--episodes B] [--prompt P] [--reply R] [--iterations N] [--model M]``.

One PPO iteration of the learner (reference and critic forwards, then forward/backward/step of
actor and critic) on the same synthetic batch under each layout: ZeRO 0 and 2, 1 and 2 Ray
workers (``--layouts 0x1,2x1,0x2,2x2``). Reports per layout the median iteration time after a
warm-up, the range, tokens/s and the peak resident memory of all workers together, plus each
layout's time relative to ZeRO 0 on 1 worker. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics

import cluster.ray_local  # noqa: F401  (before ray)
from bench import parse_with_config


def synthetic(episodes: int, prompt: int, reply: int, vocab: int, seed: int = 0):
    from learner.batch import Sample

    rng = random.Random(seed)
    out = []
    for i in range(episodes):
        p = prompt + rng.randint(-prompt // 4, prompt // 4)       # mixed lengths, like real rollouts
        r = max(1, reply + rng.randint(-reply // 2, reply // 2))
        ids = [rng.randrange(vocab) for _ in range(p + r)]
        out.append(Sample(ids, [0] * p + [1] * r, [0.0] * p + [-2.0] * r, [p - 1], [(p, p + r)],
                          [rng.choice([1.0, -1.0])], version=0, id=f"synthetic/{i}"))
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="proctor bench learner")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=384)
    ap.add_argument("--reply", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations per layout (after 1 warm-up)")
    ap.add_argument("--layouts", default="0x1,2x1,0x2,2x2", help="ZERO_STAGExWORKERS, comma separated")
    args, console, cfg, model_dir = parse_with_config(ap, argv)

    from transformers import AutoConfig

    from cluster.ray_local import init_ray
    from learner.group import LearnerGroup

    ray = init_ray(num_cpus=2)
    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    batch = synthetic(args.episodes, args.prompt, args.reply, vocab, cfg.run.seed)
    layouts = {}
    for layout in args.layouts.split(","):
        stage, workers = (int(x) for x in layout.split("x"))
        lcfg = cfg.learner.model_copy(update={"zero_stage": stage, "world_size": workers,
                                              "minibatch_size": args.episodes, "ppo_epochs": 1,
                                              "threads_per_worker": max(1, 2 // workers)})
        console.print(f"ZeRO {stage}, {workers} worker(s): {args.episodes} episodes x ~{args.prompt + args.reply} tokens")
        group = LearnerGroup(model_dir, lcfg, seed=cfg.run.seed, num_cpus_per_worker=2 / workers)
        group.train(batch)  # warm-up
        runs = [group.train(batch) for _ in range(args.iterations)]
        group.shutdown()
        times = [m["step_s"] for m in runs]
        layouts[layout] = {"zero_stage": stage, "workers": workers, "iteration_s": statistics.median(times),
                           "iteration_s_range": [min(times), max(times)],
                           "tokens_per_s": statistics.median(m["tokens_per_s"] for m in runs),
                           "peak_rss_gib_all_workers": max(m["peak_rss_gib_all_workers"] for m in runs),
                           "padding_frac": runs[-1]["padding_frac"]}
        console.print(layouts[layout])
    base = layouts.get("0x1") or next(iter(layouts.values()))
    for v in layouts.values():
        v["time_vs_zero0_1worker"] = v["iteration_s"] / base["iteration_s"]
    ray.shutdown()
    print(json.dumps({"bench": "learner", "model": cfg.model.name, "episodes": args.episodes,
                      "tokens": sum(len(s.token_ids) for s in batch), "layouts": layouts}))
    return 0
