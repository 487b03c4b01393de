"""PSGPO's line labels by binary search over prefixes (Dai et al. 2024).

A prefix of ``m`` code lines is *fixable* if any of K completions sampled from the policy after it
passes the tests. For a response that fails, the search finds the shortest unfixable prefix m*:
line m* (1-based) is the first line after which the code can no longer be fixed, so code lines
before it are labelled +1 and from it on -1 (comment, blank and prose lines 0). A response that
passes is +1 on every code line, with no search. Fixability is assumed monotone in m (a prefix of
a fixable prefix is fixable), which is what makes the search logarithmic: at most
ceil(log2(T + 1)) fixability checks for T code lines.

The search itself is pure (``first_unfixable``); ``label_response`` wraps it with the line
bookkeeping. The caller supplies ``fixable(m)``: policy completions from the prefix plus a sandbox
run (see cluster/prm.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from proctor.reward.lines import Line

Fixable = Callable[[int], Awaitable[bool]]


async def first_unfixable(num_lines: int, fixable: Fixable, *, full_passes: bool = False) -> tuple[int, int]:
    """(m*, calls): the smallest prefix length m in [0, T] with ``fixable(m)`` false, and how many
    times ``fixable`` was called. The full response (m = T) is known unfixable when it fails its
    tests, so it is never asked; ``full_passes``: nothing to search, returns (T + 1, 0)."""
    if full_passes:
        return num_lines + 1, 0
    lo, hi, calls = 0, num_lines, 0   # invariant: fixable(lo - 1) true (or lo = 0), fixable(hi) false
    while lo < hi:
        mid = (lo + hi) // 2
        calls += 1
        if await fixable(mid):
            lo = mid + 1
        else:
            hi = mid
    return lo, calls


@dataclass
class LineLabels:
    labels: list[float]               # one per line of the reply: +1 / -1 on code lines, 0 elsewhere
    first_bad_line: int | None        # 0-based index (among all reply lines) of the first -1 line
    fixable_prefix: int               # code lines before the first bad one
    calls: int                        # fixability checks made
    revised: bool                     # failed, yet a fixable non-empty prefix was found
    checks: dict[int, bool] = field(default_factory=dict)


async def label_response(lines: list[Line], passed: bool, fixable: Fixable) -> LineLabels:
    code = [ln for ln in lines if ln.scored]
    checks: dict[int, bool] = {}

    async def recorded(m: int) -> bool:
        checks[m] = ok = await fixable(m)
        return ok

    m_star, calls = await first_unfixable(len(code), recorded, full_passes=passed)
    labels = [0.0] * len(lines)
    for j, ln in enumerate(code):
        labels[ln.index] = 1.0 if j + 1 < m_star else -1.0
    # m* = 0 (not even the empty prefix is fixable) and m* = 1 both make line 1 the first bad line.
    first_bad = code[max(m_star - 1, 0)].index if not passed and code else None
    return LineLabels(labels, first_bad, min(max(m_star - 1, 0), len(code)), calls,
                      revised=not passed and m_star > 1, checks=checks)
