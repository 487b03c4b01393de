"""Paired statistics of per-problem outcomes before and after training."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cluster.metrics import read_jsonl


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs (a binomial test, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(base: dict[str, bool], trained: dict[str, bool]) -> dict:
    """Per-problem outcomes of the same problems before and after: counts, gains, losses, p-value."""
    if set(base) != set(trained):
        raise ValueError(f"paired outcomes need the same problems: {len(set(base) ^ set(trained))} differ")
    gained = [p for p in base if trained[p] and not base[p]]  # in the evaluation's order
    lost = [p for p in base if base[p] and not trained[p]]
    return {"base": sum(base.values()), "trained": sum(trained.values()), "n": len(base),
            "gained": gained, "lost": lost, "p_value": mcnemar_exact(len(gained), len(lost))}


def outcomes(eval_dir: Path) -> dict[str, dict[str, bool]]:
    """``{"pass@1": {id: bool}, "1@T": {id: bool}}`` from an evaluation's results.jsonl (one rollout)."""
    rows = read_jsonl(eval_dir / "results.jsonl")
    turns = json.loads((eval_dir / "metrics.json").read_text())["max_turns"]
    return {"pass@1": {r["id"]: r["first_turn_solved"] > 0 for r in rows},
            f"1@{turns}": {r["id"]: r["solved"] > 0 for r in rows}}
