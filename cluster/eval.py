"""Evaluation: RLEF rollouts (up to T turns with execution feedback) of a model on a dataset.

Metrics (Gehring et al. 2024 count each turn as a sample):
- ``1@T``: a rollout of up to T turns solves the problem (its final code passes the private tests);
- ``pass@1``: the first turn's code passes the private tests (single-turn, no feedback);
- ``rollout_pass@k``: at least one of k rollouts solves it (unbiased estimator over the ``samples``
  rollouts per problem), for k in {1, samples}; ``rollout_pass@1`` equals ``1@T``.
Writes ``results.jsonl`` (one row per problem), ``metrics.json`` and ``report.md``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import random
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cluster.config import ProctorConfig
from cluster.model import resolve
from cluster.problems import load_problems
from cluster.progress import make_console, progress
from rollout.engine import Engine
from rollout.episode import FeedbackBank, local_judge, run_episode
from rollout.types import SamplingSpec
from sandbox_pool.runner import Sandbox


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def evaluate(cfg: ProctorConfig, dataset: str, out_dir: Path, *, turns: int, samples: int = 1,
             temperature: float = 0.0, top_p: float = 1.0, concurrency: int = 64,
             console: Console | None = None) -> dict:
    console = console or make_console()
    out_dir.mkdir(parents=True, exist_ok=True)
    problems = load_problems(dataset, cfg.data.limit, cfg.data.skip)
    console.print(f"[bold]{len(problems)}[/] problems from {dataset}; model {cfg.model.name}; "
                  f"{samples} rollout(s) of up to {turns} turn(s) each")
    model_dir = resolve(cfg.model.name, cache_dir=Path(cfg.model.cache_dir) if cfg.model.cache_dir else None,
                        log=console.print)
    t0 = time.perf_counter()
    engine = Engine(str(model_dir), cfg.rollout, seed=cfg.run.seed)
    t_start = time.perf_counter() - t0
    try:
        with Sandbox(cfg.sandbox.backend, cfg.sandbox.slots) as sandbox:
            engine.reset_stats()
            t1 = time.perf_counter()
            episodes, first_turn = asyncio.run(_rollouts(
                engine, sandbox, problems, cfg, turns, samples, temperature, top_p, concurrency, console))
            t_roll = time.perf_counter() - t1
        stats = engine.stats()
    finally:
        engine.close()

    rows, per_problem = [], {}
    for p in problems:
        eps = episodes[p.id]
        solved = [not isinstance(e, BaseException) and e.solved for e in eps]  # an error counts as unsolved
        first = first_turn[p.id]
        per_problem[p.id] = (solved, first)
        rows.append({"id": p.id, "solved": sum(solved), "rollouts": len(eps),
                     "first_turn_solved": sum(first), "episodes": [_episode_row(e) for e in eps]})
    with open(out_dir / "results.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)

    all_eps = [e for eps in episodes.values() for e in eps if not isinstance(e, BaseException)]
    n_tokens = sum(sum(e.action_mask) for e in all_eps)
    turns_used = collections.Counter(len(e.turns) for e in all_eps)
    metrics = {
        "dataset": dataset, "model": cfg.model.name, "problems": len(problems), "rollouts_per_problem": samples,
        "max_turns": turns, "temperature": temperature, "top_p": top_p,
        f"1@{turns}": _mean(sum(s) / len(s) if s else 0.0 for s, _ in per_problem.values()),
        "pass@1": _mean(sum(f) / len(f) if f else 0.0 for _, f in per_problem.values()),
        **{f"rollout_pass@{k}": _mean(pass_at_k(len(s), sum(s), k) for s, _ in per_problem.values() if len(s) >= k)
           for k in sorted({1, samples})},
        "solved_problems": sum(any(s) for s, _ in per_problem.values()),
        "recovered_by_feedback": sum(1 for e in all_eps if e.solved and len(e.turns) > 1),
        "invalid_turns": sum(t.code is None for e in all_eps for t in e.turns),
        "turns_used": dict(sorted(turns_used.items())),
        "errors": sum(isinstance(e, BaseException) for eps in episodes.values() for e in eps),
        "generated_tokens": n_tokens, "engine_start_s": round(t_start, 2), "rollout_s": round(t_roll, 2),
        "tokens_per_s": round(n_tokens / t_roll, 1), "engine_busy_fraction": round(stats["busy_fraction"], 3),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _report(metrics, out_dir, console)
    return metrics


async def _rollouts(engine, sandbox, problems, cfg, turns, samples, temperature, top_p, concurrency, console):
    judge = local_judge(sandbox, cfg.sandbox.max_output_bytes)
    bank, rng = FeedbackBank(), random.Random(cfg.run.seed)
    gate = asyncio.Semaphore(concurrency)
    episodes: dict[str, list] = {p.id: [None] * samples for p in problems}
    first_turn: dict[str, list[bool]] = {p.id: [] for p in problems}
    with progress(console, "rollouts", len(problems) * samples) as advance:

        async def one(p, j):
            spec = SamplingSpec(temperature=temperature, top_p=top_p, max_tokens=cfg.rollout.max_new_tokens,
                                seed=cfg.run.seed * 100_003 + j if temperature > 0 else None)
            async with gate:
                try:
                    ep = await run_episode(p, engine, judge, engine.tokenizer, max_turns=turns, spec=spec,
                                           feedback=cfg.rollout.feedback, feedback_bank=bank, rng=rng)
                    if len(ep.turns) == 1:
                        first = ep.solved
                    else:  # the first attempt, judged on the private tests as if it were final
                        first = ep.turns[0].code is not None and (await judge(p, ep.turns[0].code, "private")).passed
                    first_turn[p.id].append(first)
                except Exception as e:  # one broken episode (e.g. over max_model_len) must not end the run
                    ep = e
                    first_turn[p.id].append(False)
            episodes[p.id][j] = ep
            advance()

        await asyncio.gather(*(one(p, j) for p in problems for j in range(samples)))
    return episodes, first_turn


def _episode_row(e) -> dict:
    if isinstance(e, BaseException):
        return {"error": f"{type(e).__name__}: {e}"}
    return {"private_verdict": e.private_verdict, "private_statuses": e.private_statuses,
            "turns": [{"reply": t.reply, "code": t.code, "valid": t.code is not None, "public_statuses": t.public_statuses,
                       "public_passed": t.public_passed, "feedback": t.feedback, "version": t.version}
                      for t in e.turns]}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _report(metrics: dict, out_dir: Path, console: Console) -> None:
    table = Table(title=f"{metrics['model']} on {metrics['dataset']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    lines = [f"# Evaluation: {metrics['model']} on {metrics['dataset']}", "", "| metric | value |", "|---|---|"]
    for k, v in metrics.items():
        if k in ("dataset", "model"):
            continue
        shown = f"{v:.4f}" if isinstance(v, float) and ("@" in k) else str(v)
        table.add_row(k, shown)
        lines.append(f"| {k} | {shown} |")
    console.print(table)
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    console.print(f"wrote {out_dir}/results.jsonl, metrics.json, report.md")
