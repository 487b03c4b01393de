"""``proctor bench rollout [--problems N] [--turns T] [--max-tokens M] [--model M]``.

(a) proctor's multi-turn RLEF rollout of the bundled training set (async episodes on one engine,
sampled at temperature 1 as in training, public tests in the sandbox, feedback turns); then the
same work replayed through bare vLLM offline generation (every turn's prompt exactly as the rollout
built it, generating exactly as many tokens as that turn's reply, ``ignore_eos``), twice:
(b) all turns in one batch: an upper bound no multi-turn rollout can reach, since turn k + 1's
    prompt only exists once turn k was generated and tested;
(c) turn by turn: one batch per turn index, each after the previous one finished (the plain
    synchronous loop over bare vLLM; testing time not counted).
Reports generated tokens/s of each, the ratios, and the engine busy fraction during the rollout
(time the engine spent stepping / rollout wall time). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from proctor.cluster.config import load_config
from proctor.cluster.model import resolve
from proctor.cluster.progress import make_console
from proctor.problems import load_problems
from proctor.rollout.engine import Engine, sampling_params
from proctor.rollout.episode import Conversation, local_judge, run_episode
from proctor.rollout.prompts import first_turn
from proctor.rollout.types import SamplingSpec
from proctor.sandbox_pool.runner import Sandbox


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="proctor bench rollout")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--model", default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    console = make_console(stderr=True)
    cfg = load_config(overrides=args.overrides + ([f"model.name={args.model}"] if args.model else []))
    problems = load_problems("bundled", args.problems)
    engine = Engine(str(resolve(cfg.model.name, log=console.print)), cfg.rollout, seed=cfg.run.seed)
    spec = SamplingSpec(temperature=1.0, max_tokens=args.max_tokens, seed=None)
    try:
        warm = Conversation(engine.tokenizer)
        warm.start(first_turn(problems[0]))
        asyncio.run(engine.generate(list(warm.token_ids), SamplingSpec(max_tokens=8)))  # first-step compile
        engine.llm.reset_prefix_cache()  # every side starts cold

        console.print(f"proctor rollout: {len(problems)} episodes of up to {args.turns} turns")
        with Sandbox(cfg.sandbox.backend, cfg.sandbox.slots) as sandbox:
            judge, judged = _timed(local_judge(sandbox))
            engine.reset_stats()
            t0 = time.perf_counter()
            episodes = asyncio.run(_episodes(problems, engine, judge, args.turns, spec))
            roll_s = time.perf_counter() - t0
            stats = engine.stats()
            busy = stats["busy_s"]

        turns = [[(e.token_ids[: t.prompt_end + 1], t.reply_span[1] - t.reply_span[0]) for e in episodes
                  if k < len(e.turns) for t in [e.turns[k]]] for k in range(args.turns)]
        work = [w for batch in turns for w in batch]
        console.print(f"bare vLLM: the same {len(work)} turn prompts, one batch; then turn by turn")
        bare = _replay(engine, [work], spec)
        by_turn = _replay(engine, [b for b in turns if b], spec)
    finally:
        engine.close()
    roll_tokens = sum(sum(e.action_mask) for e in episodes)
    roll_tps = roll_tokens / roll_s
    result = {
        "bench": "rollout", "model": cfg.model.name, "problems": len(problems), "max_turns": args.turns,
        "max_tokens": args.max_tokens,
        "bare_vllm": bare, "bare_vllm_turn_by_turn": by_turn,
        "proctor_rollout": {"tokens": roll_tokens, "wall_s": round(roll_s, 2), "tokens_per_s": round(roll_tps, 1),
                            "turns": sum(len(e.turns) for e in episodes), "turns_by_index": [len(b) for b in turns],
                            "solved": sum(e.solved for e in episodes), "engine_steps": stats["steps"],
                            "mean_running_requests": round(stats["mean_running"], 1),
                            "judge_calls": judged["calls"], "judge_s_per_call": round(judged["s"] / max(judged["calls"], 1), 3)},
        "ratio_rollout_vs_bare": round(roll_tps / bare["tokens_per_s"], 3),
        "ratio_rollout_vs_bare_turn_by_turn": round(roll_tps / by_turn["tokens_per_s"], 3),
        "engine_busy_fraction": round(busy / roll_s, 3),
    }
    console.print(f"bare vLLM {bare['tokens_per_s']} tok/s in one batch, {by_turn['tokens_per_s']} tok/s turn by "
                  f"turn; proctor rollout {roll_tps:.1f} tok/s (ratios {result['ratio_rollout_vs_bare']}, "
                  f"{result['ratio_rollout_vs_bare_turn_by_turn']}); engine busy {result['engine_busy_fraction']:.1%}")
    print(json.dumps(result))
    return 0


def _timed(judge):
    """``judge`` that counts its calls and the seconds episodes spent waiting on it."""
    spent = {"calls": 0, "s": 0.0}

    async def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return await judge(*args, **kwargs)
        finally:
            spent["calls"] += 1
            spent["s"] += time.perf_counter() - t

    return timed, spent


def _replay(engine, batches: list[list[tuple[list[int], int]]], spec: SamplingSpec) -> dict:
    """Bare offline generation of ``batches`` one after another: each (prompt ids, reply length)
    generates exactly that many tokens. Starts from an empty prefix cache: the rollout before it
    left every one of these prompts cached, which would spare the replay all its prefill work."""
    engine.llm.reset_prefix_cache()
    tokens, t0 = 0, time.perf_counter()
    for batch in batches:
        params = []
        for _, n in batch:
            p = sampling_params(spec)
            p.max_tokens, p.min_tokens, p.ignore_eos = n, n, True
            params.append(p)
        outs = engine.llm.generate([{"prompt_token_ids": ids} for ids, _ in batch], params, use_tqdm=False)
        tokens += sum(len(o.outputs[0].token_ids) for o in outs)
    wall = time.perf_counter() - t0
    return {"tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1),
            "batches": len(batches)}


async def _episodes(problems, engine, judge, turns, spec):
    return await asyncio.gather(*(run_episode(p, engine, judge, engine.tokenizer, max_turns=turns, spec=spec)
                                  for p in problems))
