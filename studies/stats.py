"""Paired statistics of per-problem outcomes before and after training."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from cluster.metrics import read_jsonl


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs (a binomial test, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _same_problems(base: dict[str, bool], trained: dict[str, bool]) -> None:
    if set(base) != set(trained):
        raise ValueError(f"paired outcomes need the same problems: {len(set(base) ^ set(trained))} differ")


def paired(base: dict[str, bool], trained: dict[str, bool]) -> dict:
    """Per-problem outcomes of the same problems before and after: counts, gains, losses, p-value."""
    _same_problems(base, trained)
    gained = [p for p in base if trained[p] and not base[p]]  # in the evaluation's order
    lost = [p for p in base if base[p] and not trained[p]]
    return {"base": sum(base.values()), "trained": sum(trained.values()), "n": len(base),
            "gained": gained, "lost": lost, "p_value": mcnemar_exact(len(gained), len(lost))}


def all_seeds_exact(base: dict[str, bool], trained: list[dict[str, bool]]) -> dict:
    """All seeds against the one base evaluation, problem by problem: an exact permutation test.

    The statistic is the summed per-problem gain, sum over problems of (mean over seeds of the trained
    outcome) - (the base outcome). Under the null hypothesis the base and the S trained models are
    exchangeable on each problem, so which of a problem's S + 1 outcomes is the base's is uniform; the
    test enumerates those relabellings exactly (a sum over problems, so a convolution). Two-sided:
    P(|T'| >= |T|). With one seed it is McNemar's exact test. The unit is the problem (the seeds share
    the base evaluation), so problems flipped by one seed of S count 1/S.
    """
    if not trained:
        raise ValueError("all_seeds_exact needs at least one trained evaluation")
    for t in trained:
        _same_problems(base, t)
    s = len(trained)
    observed = sum(sum(t[p] for t in trained) - s * base[p] for p in base)  # S x the summed gain: an integer
    dist: dict[int, float] = {0: 1.0}
    for p in base:
        k = base[p] + sum(t[p] for t in trained)  # passes among the S + 1 models
        if k in (0, s + 1):
            continue  # all agree: every relabelling gives 0
        step = [(k - 1 - s, k / (s + 1)), (k, (s + 1 - k) / (s + 1))]  # the base drawn among the passes, or not
        nxt: dict[int, float] = defaultdict(float)
        for v, pr in dist.items():
            for dv, q in step:
                nxt[v + dv] += pr * q
        dist = nxt
    p_value = sum(pr for v, pr in dist.items() if abs(v) >= abs(observed))
    return {"seeds": s, "base": sum(base.values()), "trained_mean": sum(sum(t.values()) for t in trained) / s,
            "gain_mean": observed / s, "p_value": min(1.0, p_value)}


def outcomes(eval_dir: Path) -> dict[str, dict[str, bool]]:
    """``{"pass@1": {id: bool}, "1@T": {id: bool}}`` from an evaluation's results.jsonl (one rollout)."""
    rows = read_jsonl(eval_dir / "results.jsonl")
    turns = json.loads((eval_dir / "metrics.json").read_text())["max_turns"]
    return {"pass@1": {r["id"]: r["first_turn_solved"] > 0 for r in rows},
            f"1@{turns}": {r["id"]: r["solved"] > 0 for r in rows}}
