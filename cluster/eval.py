"""Single-turn evaluation: generate with vLLM, extract code, judge on private tests in the sandbox.

Writes ``results.jsonl`` (one row per sample), ``metrics.json`` and ``report.md`` to the output
directory. Multi-turn (RLEF n@k) evaluation builds on the rollout episodes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from cluster.config import ProctorConfig
from cluster.model import resolve
from cluster.problems import load_problems
from rollout.code import extract_code
from rollout.engine import make_llm, sampling_params
from rollout.prompts import first_turn
from sandbox_pool.judge import judge_many
from sandbox_pool.runner import Sandbox


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def evaluate(cfg: ProctorConfig, dataset: str, out_dir: Path, samples: int = 1, temperature: float = 0.0,
             console: Console | None = None) -> dict:
    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    problems = load_problems(dataset, cfg.data.limit)
    console.print(f"[bold]{len(problems)}[/] problems from {dataset}; model {cfg.model.name}")
    model_dir = resolve(cfg.model.name, cache_dir=Path(cfg.model.cache_dir) if cfg.model.cache_dir else None,
                        log=console.print)

    t0 = time.perf_counter()
    llm = make_llm(str(model_dir), cfg.rollout, seed=cfg.run.seed)
    t_load = time.perf_counter() - t0
    params = sampling_params(cfg.rollout, n=samples, temperature=temperature, seed=cfg.run.seed)
    conversations = [[{"role": "user", "content": first_turn(p)}] for p in problems]
    t1 = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=True)
    t_gen = time.perf_counter() - t1
    n_tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)

    samples_rows = []
    for p, o in zip(problems, outputs):
        for j, c in enumerate(o.outputs):
            samples_rows.append({"id": p.id, "sample": j, "reply": c.text,
                                 "code": extract_code(c.text, p.entry_point), "problem": p})
    to_judge = [(r["problem"], r["code"]) for r in samples_rows if r["code"] is not None]
    t2 = time.perf_counter()
    with Progress(console=console) as bar, Sandbox(cfg.sandbox.backend, cfg.sandbox.slots) as sandbox:
        task = bar.add_task("judging (private tests)", total=len(to_judge))
        verdicts = iter(judge_many(sandbox, to_judge, "private", progress=lambda: bar.advance(task),
                                   output_bytes=cfg.sandbox.max_output_bytes))
    t_judge = time.perf_counter() - t2

    per_problem: dict[str, list[bool]] = {p.id: [] for p in problems}
    with open(out_dir / "results.jsonl", "w") as f:
        for r in samples_rows:
            v = next(verdicts) if r["code"] is not None else None
            verdict = v.verdict if v else "invalid"
            per_problem[r["id"]].append(verdict == "pass")
            f.write(json.dumps({"id": r["id"], "sample": r["sample"], "verdict": verdict,
                                "statuses": [t.status for t in v.tests] if v else [],
                                "error": _first_error(v) if v else "no valid code in the reply",
                                "code": r["code"], "reply": r["reply"]}) + "\n")
    ks = sorted({1, samples})
    metrics = {
        "dataset": dataset, "model": cfg.model.name, "problems": len(problems), "samples": samples,
        "temperature": temperature,
        **{f"pass@{k}": sum(pass_at_k(len(v), sum(v), k) for v in per_problem.values()) / len(problems) for k in ks},
        "solved": sum(any(v) for v in per_problem.values()),
        "invalid_replies": sum(r["code"] is None for r in samples_rows),
        "generated_tokens": n_tokens, "engine_start_s": round(t_load, 2), "generate_s": round(t_gen, 2),
        "tokens_per_s": round(n_tokens / t_gen, 1), "judge_s": round(t_judge, 2),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _report(metrics, out_dir, console)
    return metrics


def _first_error(v) -> str:
    bad = next((t for t in v.tests if t.status != "pass"), None)
    if bad is None:
        return ""
    last = bad.detail.strip().splitlines()[-1:] or [""]
    return f"{bad.status}: {last[0][:300]}"


def _report(metrics: dict, out_dir: Path, console: Console) -> None:
    table = Table(title=f"{metrics['model']} on {metrics['dataset']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    lines = [f"# Evaluation: {metrics['model']} on {metrics['dataset']}", "", "| metric | value |", "|---|---|"]
    for k, v in metrics.items():
        if k in ("dataset", "model"):
            continue
        shown = f"{v:.4f}" if isinstance(v, float) and k.startswith("pass@") else str(v)
        table.add_row(k, shown)
        lines.append(f"| {k} | {shown} |")
    console.print(table)
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    console.print(f"wrote {out_dir}/results.jsonl, metrics.json, report.md")
