"""Evaluation: RLEF rollouts (up to T turns with execution feedback) of a model on a dataset, with
the metrics of ``cluster.rollouts`` (1@T, pass@1, rollout_pass@k; the training loop's held-out
evaluation reports the same ones). Writes ``results.jsonl`` (one row per problem), ``metrics.json``
and ``report.md``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from proctor.cluster.config import ProctorConfig
from proctor.cluster.model import read_adapter, resolve, served_rank
from proctor.cluster.progress import make_console
from proctor.cluster.rollouts import Rollouts, heldout_metrics, rollout
from proctor.problems import load_problems
from proctor.rollout.engine import Engine
from proctor.rollout.episode import FeedbackBank, local_judge
from proctor.rollout.types import Episode, SamplingSpec
from proctor.sandbox_pool.runner import Sandbox


@dataclass(frozen=True)
class EvalSet:
    """One dataset to evaluate (its first ``limit`` problems after ``skip``) and where its results go."""
    dataset: str
    out_dir: Path
    limit: int | None = None
    skip: int = 0


def evaluate(cfg: ProctorConfig, sets: list[EvalSet], *, turns: int, samples: int = 1, temperature: float = 0.0,
             top_p: float = 1.0, concurrency: int = 64, adapter: Path | None = None,
             console: Console | None = None) -> list[dict]:
    """RLEF rollouts of every set's problems through one engine started once (a second engine start
    is minutes with ``rollout.compile``), all sets in one batch; each set's results and metrics are
    written to its own ``out_dir``. Returns each set's metrics, in order.

    ``adapter``: a peft LoRA dir (``policy/adapter`` of a LoRA run) served on top of ``model.name``
    through vLLM's LoRA support, exactly as trained, instead of a network with it merged in (a bf16
    merge rounds away much of a small update)."""
    console = console or make_console()
    files = read_adapter(adapter) if adapter else None
    if files:
        cfg = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(
            update={"max_lora_rank": served_rank(adapter, cfg.rollout.max_lora_rank)})})
    problem_sets = [load_problems(s.dataset, s.limit, s.skip) for s in sets]  # bad input fails before the engine starts
    for s, problems in zip(sets, problem_sets):
        s.out_dir.mkdir(parents=True, exist_ok=True)
        console.print(f"[bold]{len(problems)}[/] problems from {s.dataset}; model {cfg.model.name}; "
                      f"{samples} rollout(s) of up to {turns} turn(s) each")
    model_dir = resolve(cfg.model.name, cache_dir=Path(cfg.model.cache_dir) if cfg.model.cache_dir else None,
                        log=console.print)
    problems = [p for ps in problem_sets for p in ps]
    t0 = time.perf_counter()
    engine = Engine(str(model_dir), cfg.rollout, seed=cfg.run.seed)
    try:
        if files:
            asyncio.run(engine.update_weights(files, version=1))
            console.print(f"serving the LoRA adapter {adapter} on {cfg.model.name}")
        t_start = time.perf_counter() - t0
        with Sandbox(cfg.sandbox.backend, cfg.sandbox.slots) as sandbox:
            engine.reset_stats()
            t1 = time.perf_counter()
            spec = SamplingSpec(temperature=temperature, top_p=top_p, max_tokens=cfg.rollout.max_new_tokens)
            done = asyncio.run(rollout(
                problems, engine, local_judge(sandbox, cfg.sandbox.max_output_bytes), engine.tokenizer,
                samples=samples, max_turns=turns, spec=spec,
                seed=lambda i, j: cfg.run.seed * 100_003 + j if temperature > 0 else None,
                feedback=cfg.rollout.feedback, bank=FeedbackBank(), rng=random.Random(cfg.run.seed),
                console=console, label="rollouts", concurrency=concurrency, first_attempt=True, catch=True))
            t_roll = time.perf_counter() - t1
        stats = engine.stats()
    finally:
        engine.close()

    all_tokens = sum(sum(e.action_mask) for e in done.flat())
    shared = {**({"adapter": str(adapter)} if adapter else {}), "engine_start_s": round(t_start, 2), "rollout_s": round(t_roll, 2),
              "tokens_per_s": round(all_tokens / t_roll, 1), "engine_busy_fraction": round(stats["busy_fraction"], 3)}
    if len(sets) > 1:  # the timings above cover every set, evaluated together
        shared["evaluated_with"] = [s.dataset for s in sets]
    out, start = [], 0
    for s, ps in zip(sets, problem_sets):
        part = Rollouts(ps, done.episodes[start:start + len(ps)], done.first_attempt[start:start + len(ps)])
        start += len(ps)
        out.append(_write(s, cfg, part, turns, samples, temperature, top_p, shared, console))
    return out


def _write(s: EvalSet, cfg: ProctorConfig, done: Rollouts, turns: int, samples: int, temperature: float,
           top_p: float, shared: dict, console: Console) -> dict:
    rows = [{"id": p.id, "solved": sum(isinstance(e, Episode) and e.solved for e in eps),
             "rollouts": len(eps), "first_turn_solved": sum(first), "episodes": [_episode_row(e) for e in eps]}
            for p, eps, first in zip(done.problems, done.episodes, done.first_attempt)]
    with open(s.out_dir / "results.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    n_tokens = sum(sum(e.action_mask) for e in done.flat())
    metrics = {"dataset": s.dataset, "model": cfg.model.name, "rollouts_per_problem": samples, "max_turns": turns,
               "temperature": temperature, "top_p": top_p, **heldout_metrics(done, turns),
               "generated_tokens": n_tokens, **shared}
    (s.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _report(metrics, s.out_dir, console)
    return metrics


def _episode_row(e) -> dict:
    if isinstance(e, BaseException):
        return {"error": f"{type(e).__name__}: {e}"}
    return {"private_verdict": e.private_verdict, "private_statuses": e.private_statuses,
            "turns": [{"reply": t.reply, "code": t.code, "valid": t.code is not None, "public_statuses": t.public_statuses,
                       "public_passed": t.public_passed, "feedback": t.feedback, "version": t.version}
                      for t in e.turns]}


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
