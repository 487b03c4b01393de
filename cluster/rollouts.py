"""One rollout function for training and evaluation, and the held-out metrics both report.

Every episode is an RLEF rollout (``rollout.episode.run_episode``) run as a coroutine over any
``Generator`` (one engine, or the engine group) and any judge (a local sandbox, or the pool).
Metrics (Gehring et al. 2024 count each turn as a sample):
- ``1@T``: a rollout of up to T turns solves the problem (its final code passes the private tests);
- ``pass@1``: the first turn's code passes the private tests (single-turn, no feedback);
- ``rollout_pass@k``: at least one of k rollouts solves it (unbiased estimator over the ``samples``
  rollouts per problem), for k in {1, samples}; ``rollout_pass@1`` equals ``1@T``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from rich.console import Console

from proctor.cluster.metrics import retry_kinds
from proctor.cluster.progress import progress
from proctor.rollout.episode import FeedbackBank, run_episode
from proctor.rollout.types import Episode, SamplingSpec


@dataclass
class Rollouts:
    problems: list
    episodes: list[list]                  # per problem, per sample: an Episode (or the exception it raised)
    first_attempt: list[list[bool]] | None = None  # per problem, per sample: the first attempt passes the private tests

    def flat(self) -> list[Episode]:
        """The episodes that finished, in order."""
        return [e for eps in self.episodes for e in eps if isinstance(e, Episode)]


async def rollout(problems: list, generator, judge, tokenizer, *, samples: int, max_turns: int, spec: SamplingSpec,
                  seed: Callable[[int, int], int | None], feedback: str, bank: FeedbackBank, rng: random.Random,
                  console: Console, label: str, concurrency: int | None = None, first_attempt: bool = False,
                  catch: bool = False) -> Rollouts:
    """``samples`` RLEF rollouts of each problem, concurrently. ``seed(i, j)``: the sampling seed of
    the i-th rollout overall, sample j of its problem. ``first_attempt``: judge each episode's first
    attempt on the private tests too (for pass@1). ``catch``: an episode that raises (e.g. over the
    engine's context) is recorded as that exception instead of ending the whole rollout."""
    gate = asyncio.Semaphore(concurrency) if concurrency else None
    jobs = [(k, j) for k in range(len(problems)) for j in range(samples)]
    episodes = [[None] * samples for _ in problems]
    first = [[False] * samples for _ in problems] if first_attempt else None
    with progress(console, label, len(jobs)) as advance:

        async def one(i: int, k: int, j: int) -> None:
            p = problems[k]
            s = replace(spec, seed=seed(i, j))
            async with gate or contextlib.nullcontext():
                try:
                    ep = await run_episode(p, generator, judge, tokenizer, max_turns=max_turns, spec=s,
                                           feedback=feedback, feedback_bank=bank, rng=rng)
                    if first is not None:
                        first[k][j] = ep.solved if len(ep.turns) == 1 else (   # else judged as if it were final
                            ep.turns[0].code is not None and (await judge(p, ep.turns[0].code, "private")).passed)
                except Exception as e:
                    if not catch:
                        raise
                    ep = e
            episodes[k][j] = ep
            advance()

        await asyncio.gather(*(one(i, k, j) for i, (k, j) in enumerate(jobs)))
    return Rollouts(list(problems), episodes, first)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def heldout_metrics(r: Rollouts, turns: int) -> dict:
    """1@T, pass@1, rollout_pass@k and the feedback counts of a held-out rollout (``first_attempt=True``)."""
    solved = [[isinstance(e, Episode) and e.solved for e in eps] for eps in r.episodes]  # an error counts as unsolved
    eps = r.flat()
    samples = max((len(s) for s in solved), default=1)
    return {"problems": len(r.problems),
            f"1@{turns}": _mean(sum(s) / len(s) for s in solved if s),
            "pass@1": _mean(sum(f) / len(f) for f in (r.first_attempt or []) if f),
            **{f"rollout_pass@{k}": _mean(pass_at_k(len(s), sum(s), k) for s in solved if len(s) >= k)
               for k in sorted({1, samples})},
            "solved_problems": sum(any(s) for s in solved),
            "recovered_by_feedback": sum(1 for e in eps if e.solved and len(e.turns) > 1),
            "invalid_turns": sum(t.code is None for e in eps for t in e.turns),
            "retries": retry_kinds(eps),
            "turns_used": dict(sorted(collections.Counter(len(e.turns) for e in eps).items())),
            "errors": sum(not isinstance(e, Episode) for eps_ in r.episodes for e in eps_)}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
