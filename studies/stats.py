"""Paired statistics of per-problem outcomes before and after training."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from proctor.cluster.metrics import read_jsonl


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs (a binomial test, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def net_needed(flips: int, alpha: float = 0.05) -> int | None:
    """The smallest net gain (gained - lost) that McNemar's exact test calls significant when ``flips``
    problems flip in all (gained + lost = flips); None when no split of so few flips is."""
    for gained in range((flips + 1) // 2, flips + 1):
        if mcnemar_exact(gained, flips - gained) < alpha:
            return 2 * gained - flips
    return None


def seed_power(flips: int, gain_share: float, alpha: float = 0.05) -> float:
    """The chance that one run is significantly better (p < alpha) when ``flips`` problems flip and each flip
    is a gain with probability ``gain_share`` (independently): the binomial mass above ``net_needed``."""
    need = net_needed(flips, alpha)
    if need is None:
        return 0.0
    return sum(math.comb(flips, k) * gain_share**k * (1 - gain_share) ** (flips - k)
               for k in range((flips + need) // 2, flips + 1))


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


def groups_exact(a: list[dict[str, bool]], b: list[dict[str, bool]]) -> dict:
    """Two groups of evaluations of the same problems (e.g. two arms' seeds), problem by problem: an exact
    permutation test of their mean pass counts.

    Under the null hypothesis the A + B evaluations are exchangeable on each problem, so the number of a
    problem's k passes that fall in A is hypergeometric; the statistic, sum over problems of B x (A's
    passes) - A x (B's passes) (the mean difference times A x B: an integer), has the convolution of
    those as its exact distribution. Two-sided: P(|T'| >= |T|). One evaluation against one is McNemar's
    exact test. The unit is the problem, so a problem flipped by one of S evaluations counts 1/S.
    """
    if not a or not b:
        raise ValueError("groups_exact needs at least one evaluation in each group")
    for t in [*a[1:], *b]:
        _same_problems(a[0], t)
    na, nb = len(a), len(b)
    observed = sum(nb * sum(t[p] for t in a) - na * sum(t[p] for t in b) for p in a[0])
    dist: dict[int, float] = {0: 1.0}
    for p in a[0]:
        k = sum(t[p] for t in [*a, *b])  # passes among the A + B evaluations
        if k in (0, na + nb):
            continue  # all agree: every relabelling gives 0
        step = [(nb * j - na * (k - j), math.comb(na, j) * math.comb(nb, k - j) / math.comb(na + nb, k))
                for j in range(max(0, k - nb), min(k, na) + 1)]  # j of the k passes in A
        nxt: dict[int, float] = defaultdict(float)
        for v, pr in dist.items():
            for dv, q in step:
                nxt[v + dv] += pr * q
        dist = nxt
    p_value = sum(pr for v, pr in dist.items() if abs(v) >= abs(observed))
    return {"a_mean": sum(sum(t.values()) for t in a) / na, "b_mean": sum(sum(t.values()) for t in b) / nb,
            "diff": observed / (na * nb), "p_value": min(1.0, p_value)}


def all_seeds_exact(base: dict[str, bool], trained: list[dict[str, bool]]) -> dict:
    """All seeds against the one base evaluation, problem by problem: ``groups_exact(trained, [base])``.
    With one seed it is McNemar's exact test; the seeds share the base evaluation, so problems flipped
    by one seed of S count 1/S."""
    if not trained:
        raise ValueError("all_seeds_exact needs at least one trained evaluation")
    g = groups_exact(trained, [base])
    return {"seeds": len(trained), "base": sum(base.values()), "trained_mean": g["a_mean"], "gain_mean": g["diff"],
            "p_value": g["p_value"]}


def has_outcomes(eval_dir: Path) -> bool:
    """Whether ``eval_dir`` holds a finished evaluation that ``outcomes`` reads."""
    return (eval_dir / "results.jsonl").exists() and (eval_dir / "metrics.json").exists()


def outcomes(eval_dir: Path) -> dict[str, dict[str, bool]]:
    """``{"pass@1": {id: bool}, "1@T": {id: bool}}`` from an evaluation's results.jsonl (one rollout)."""
    try:
        turns = json.loads((eval_dir / "metrics.json").read_text())["max_turns"]
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{eval_dir / 'metrics.json'}: needs max_turns ({e!r})") from None
    rows = read_jsonl(eval_dir / "results.jsonl")
    try:
        return {"pass@1": {r["id"]: r["first_turn_solved"] > 0 for r in rows},
                f"1@{turns}": {r["id"]: r["solved"] > 0 for r in rows}}
    except (KeyError, TypeError) as e:
        raise ValueError(f"{eval_dir / 'results.jsonl'}: every row needs id, first_turn_solved, solved ({e!r})") from None
