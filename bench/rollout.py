"""``proctor bench rollout [--problems N] [--turns T] [--max-tokens M] [--model M]``.

The same first-turn prompts (the bundled training set, sampled at temperature 1 as in training)
through (a) bare vLLM offline generation, one batch, and (b) proctor's multi-turn RLEF rollout
(async episodes on the same engine, public tests in the sandbox, feedback turns). Reports generated
tokens/s of each, their ratio, and the engine busy fraction during the rollout (time the engine
spent stepping / rollout wall time). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from rich.console import Console

from cluster.config import load_config
from cluster.model import resolve
from cluster.problems import load_problems
from rollout.engine import Engine, sampling_params
from rollout.episode import Conversation, local_judge, run_episode
from rollout.prompts import first_turn
from rollout.types import SamplingSpec
from sandbox_pool.runner import Sandbox


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="proctor bench rollout")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--model", default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    console = Console(stderr=True)
    cfg = load_config(overrides=args.overrides + ([f"model.name={args.model}"] if args.model else []))
    problems = load_problems("bundled", args.problems)
    engine = Engine(str(resolve(cfg.model.name, log=console.print)), cfg.rollout, seed=cfg.run.seed)
    spec = SamplingSpec(temperature=1.0, max_tokens=args.max_tokens, seed=None)
    try:
        prompts = []
        for p in problems:
            conv = Conversation(engine.tokenizer)
            conv.start(first_turn(p))
            prompts.append({"prompt_token_ids": list(conv.token_ids)})
        console.print(f"bare vLLM: {len(prompts)} prompts, one batch")
        t0 = time.perf_counter()
        outs = engine.llm.generate(prompts, sampling_params(spec), use_tqdm=True)
        bare_s = time.perf_counter() - t0
        bare_tokens = sum(len(o.outputs[0].token_ids) for o in outs)

        console.print(f"proctor rollout: {len(problems)} episodes of up to {args.turns} turns")
        with Sandbox(cfg.sandbox.backend, cfg.sandbox.slots) as sandbox:
            judge = local_judge(sandbox)
            engine.reset_stats()
            t0 = time.perf_counter()
            episodes = asyncio.run(_episodes(problems, engine, judge, args.turns, spec))
            roll_s = time.perf_counter() - t0
            busy = engine.stats()["busy_s"]
    finally:
        engine.close()
    roll_tokens = sum(sum(e.action_mask) for e in episodes)
    bare_tps, roll_tps = bare_tokens / bare_s, roll_tokens / roll_s
    result = {
        "bench": "rollout", "model": cfg.model.name, "problems": len(problems), "max_turns": args.turns,
        "max_tokens": args.max_tokens,
        "bare_vllm": {"tokens": bare_tokens, "wall_s": round(bare_s, 2), "tokens_per_s": round(bare_tps, 1)},
        "proctor_rollout": {"tokens": roll_tokens, "wall_s": round(roll_s, 2), "tokens_per_s": round(roll_tps, 1),
                            "turns": sum(len(e.turns) for e in episodes),
                            "solved": sum(e.solved for e in episodes)},
        "ratio_rollout_vs_bare": round(roll_tps / bare_tps, 3),
        "engine_busy_fraction": round(busy / roll_s, 3),
    }
    console.print(f"bare vLLM {bare_tps:.1f} tok/s; proctor rollout {roll_tps:.1f} tok/s "
                  f"(ratio {result['ratio_rollout_vs_bare']}); engine busy {result['engine_busy_fraction']:.1%}")
    print(json.dumps(result))
    return 0


async def _episodes(problems, engine, judge, turns, spec):
    return await asyncio.gather(*(run_episode(p, engine, judge, engine.tokenizer, max_turns=turns, spec=spec)
                                  for p in problems))
