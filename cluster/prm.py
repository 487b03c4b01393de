"""``proctor prm label`` and ``proctor prm train``: PSGPO's data pipeline over proctor's actors.

Labelling: for each problem and each policy checkpoint, sample ``responses_per_problem`` replies
(EngineActors), judge each on the tests (sandbox pool), and binary-search the line prefixes of the
failed ones: a prefix is fixable if any of ``k`` completions sampled from it passes. Problems run
as concurrent coroutines, so engines and sandboxes stay busy. Rows are appended to the JSONL as
they finish; a rerun skips (checkpoint, problem) pairs already in the file, so an interrupted run
loses nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from proctor.cluster.config import ProctorConfig
from proctor.cluster.model import resolve
from proctor.cluster.progress import make_console, progress
from proctor.cluster.ray_local import init_ray
from proctor.problems import load_problems
from proctor.reward.label import label_response
from proctor.reward.lines import reply_lines
from proctor.reward.train import train_prm
from proctor.rollout.engine_group import EngineGroup
from proctor.rollout.episode import Conversation
from proctor.rollout.prompts import first_turn
from proctor.rollout.types import SamplingSpec
from proctor.sandbox_pool.code import extract_code
from proctor.sandbox_pool.pool import SandboxPool


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


async def label_problem(problem, generator, judge, tokenizer, cfg: ProctorConfig, checkpoint: str,
                        counts: Counter) -> list[dict]:
    """Label rows of one problem's sampled responses (responses without code are counted, not kept)."""
    lc = cfg.prm.label
    conv = Conversation(tokenizer)
    prompt = conv.start(first_turn(problem))
    spec = SamplingSpec(n=lc.responses_per_problem, temperature=lc.temperature, max_tokens=lc.max_new_tokens,
                        seed=_seed(cfg.run.seed, checkpoint, problem.id))
    gens = await generator.generate(prompt, spec)

    async def passes(reply_ids: list[int]) -> bool | None:
        """True / False on the tests; None for no code or a sandbox infra error."""
        code = extract_code(tokenizer.decode(reply_ids, skip_special_tokens=True), problem.entry_point)
        if code is None:
            return None
        counts["sandbox_runs"] += 1
        verdict = await judge(problem, code, lc.tests)
        return None if verdict.verdict == "infra_error" else verdict.passed

    async def one(r: int, reply_ids: list[int]) -> dict | None:
        t0 = time.perf_counter()
        lines = reply_lines(tokenizer, reply_ids, problem.entry_point)
        code = [ln for ln in lines if ln.scored]
        passed = await passes(reply_ids)
        if passed is None or not code:
            counts["no_code_or_infra"] += 1
            return None

        async def fixable(m: int) -> bool:
            cut = code[m - 1].last_token + 1 if m else 0
            prefix = reply_ids[:cut]
            comps = await generator.generate(prompt + prefix, SamplingSpec(
                n=lc.k, temperature=lc.temperature, max_tokens=lc.max_new_tokens,
                seed=_seed(cfg.run.seed, checkpoint, problem.id, r, m)))
            counts["completions"] += len(comps)
            results = await asyncio.gather(*(passes(prefix + c.token_ids) for c in comps))
            return any(results)

        lab = await label_response(lines, passed, fixable)
        counts["searches"] += not passed
        counts["fixability_checks"] += lab.calls
        return {"problem_id": problem.id, "checkpoint": checkpoint, "response": r, "prompt_ids": prompt,
                "response_ids": list(reply_ids), "passed": passed, "line_texts": [ln.text for ln in lines],
                "line_kinds": [ln.kind for ln in lines], "line_last_tokens": [ln.last_token for ln in lines],
                "labels": lab.labels, "first_bad_line": lab.first_bad_line, "fixable_prefix": lab.fixable_prefix,
                "revised": lab.revised, "calls": lab.calls,
                "checks": {str(m): ok for m, ok in sorted(lab.checks.items())},
                "seconds": time.perf_counter() - t0}

    rows = await asyncio.gather(*(one(r, g.token_ids) for r, g in enumerate(gens)))
    counts["responses"] += len(gens)
    return [row for row in rows if row is not None]


async def _label_all(problems, generator, judge, tokenizer, cfg: ProctorConfig, checkpoint: str, counts: Counter,
                     f, advance) -> None:
    """All problems as concurrent coroutines; each problem's rows are appended as soon as it is done."""
    async def one(p):
        for row in await label_problem(p, generator, judge, tokenizer, cfg, checkpoint, counts):
            counts["rows_seen"] += 1
            if cfg.prm.label.revised_only and not row["revised"]:
                continue
            f.write(json.dumps(row) + "\n")
            f.flush()
        advance()

    await asyncio.gather(*(one(p) for p in problems))


def label(cfg: ProctorConfig, console: Console | None = None) -> dict:
    """Write ``cfg.prm.label.out`` (JSONL) and a summary next to it; returns the summary."""
    from transformers import AutoTokenizer

    console = console or make_console()
    lc = cfg.prm.label
    out = Path(lc.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    problems = load_problems(cfg.data.train)[lc.skip:]
    problems = problems[: lc.problems or cfg.data.limit or len(problems)]
    done = set()
    if out.exists():
        done = {(r["checkpoint"], r["problem_id"]) for r in map(json.loads, out.read_text().splitlines())}
        # a problem whose responses all lacked code leaves no row: it is labelled again (cheap)
    checkpoints = lc.checkpoints or [cfg.model.name]
    init_ray(cfg.run.ray_address, num_cpus=None)
    pool = SandboxPool(cfg.sandbox.actors, cfg.sandbox.backend, cfg.sandbox.slots)
    counts: Counter = Counter()
    t0 = time.perf_counter()
    try:
        for ckpt in checkpoints:
            model_dir = str(resolve(ckpt, cache_dir=Path(cfg.model.cache_dir) if cfg.model.cache_dir else None,
                                    log=console.print))
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            todo = [p for p in problems if (ckpt, p.id) not in done]
            console.print(f"[bold]prm label[/]: {ckpt}: {len(todo)} problems ({len(problems) - len(todo)} already "
                          f"in {out}), {lc.responses_per_problem} responses each, K = {lc.k}")
            engines = EngineGroup(model_dir, cfg.rollout, seed=cfg.run.seed, num_cpus=cfg.run.engine_cpus)
            try:
                engines.wait_ready()
                with progress(console, f"labelling ({Path(ckpt).name})", len(todo)) as advance, open(out, "a") as f:
                    asyncio.run(_label_all(todo, engines, pool.judge, tokenizer, cfg, ckpt, counts, f, advance))
            finally:
                engines.shutdown()
    finally:
        pool.shutdown()
    summary = summarize(out, counts, time.perf_counter() - t0)
    (out.with_suffix(".summary.json")).write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, console)
    return summary


def summarize(path: Path, counts: Counter, seconds: float) -> dict:
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    labels = Counter(y for r in rows for y, k in zip(r["labels"], r["line_kinds"]) if k == "code")
    failed = [r for r in rows if not r["passed"]]
    return {"rows": len(rows), "problems": len({r["problem_id"] for r in rows}),
            "passed": sum(r["passed"] for r in rows), "failed": len(failed),
            "revised": sum(r["revised"] for r in rows),
            "positive_lines": labels[1.0], "negative_lines": labels[-1.0],
            "neutral_lines": sum(k != "code" for r in rows for k in r["line_kinds"]),
            "positive_frac": labels[1.0] / max(labels[1.0] + labels[-1.0], 1),
            "fixability_checks_per_search": (sum(r["calls"] for r in failed) / len(failed)) if failed else 0.0,
            "this_run": {**dict(counts), "seconds": seconds,
                         "seconds_per_labelled_response": seconds / max(counts["rows_seen"], 1)}}


def _print_summary(s: dict, console: Console) -> None:
    table = Table(title="PRM labels")
    for col in ("rows", "passed", "failed", "revised", "+ lines", "- lines", "0 lines", "checks/search", "s/response"):
        table.add_column(col, justify="right")
    table.add_row(*(str(s[k]) for k in ("rows", "passed", "failed", "revised", "positive_lines", "negative_lines",
                                        "neutral_lines")),
                  f"{s['fixability_checks_per_search']:.2f}", f"{s['this_run']['seconds_per_labelled_response']:.1f}")
    console.print(table)


def train(cfg: ProctorConfig, console: Console | None = None) -> dict:
    console = console or make_console()
    tc = cfg.prm.train
    base = str(resolve(tc.base_model or cfg.model.name,
                       cache_dir=Path(cfg.model.cache_dir) if cfg.model.cache_dir else None, log=console.print))
    meta = train_prm(tc, base, seed=cfg.run.seed, log=console.print,
                     progress=lambda desc, total: progress(console, desc, total))
    h = meta["heldout"]

    def fmt(key: str) -> str:
        v = h.get(key)
        return "n/a" if v is None else f"{v:.3f}"

    console.print(f"PRM -> {tc.out}: held-out {h.get('lines', 0)} lines ({fmt('positive_frac')} positive), accuracy "
                  f"{fmt('line_accuracy')}, AUC {fmt('auc')} (n/a: one class only), first bad line located "
                  f"{fmt('first_bad_located')} ({meta['seconds']:.0f} s)")
    return meta
