"""PSGPO's dense reward: each code line's PRM score, normalised by the reply's code-line count.

For a reply with T code lines scored s_1..s_T in [-1, 1], the reward at line m's last token is
``lambda * s_m / T``, where lambda is ``prm_weight_correct`` if the episode's final code passed and
``prm_weight_incorrect`` if not. Comment, blank and prose lines get 0 and do not count in T, so
adding comments changes nothing, and repeating lines cannot raise the total: a reply's dense
reward is lambda times the *mean* score of its code lines, bounded by lambda whatever its length.
"""

from __future__ import annotations

from dataclasses import dataclass

from proctor.reward.lines import Line, line_shares


@dataclass
class ReplyScores:
    start: int                 # index of the reply's first token in the episode's token ids
    lines: list[Line]          # all lines of the reply (last_token relative to the reply)
    scores: list[float]        # one PRM score per code line, in order

    @property
    def code(self) -> list[Line]:
        return [ln for ln in self.lines if ln.scored]


def dense_rewards(n_tokens: int, replies: list[ReplyScores], solved: bool, weight_correct: float,
                  weight_incorrect: float) -> list[float]:
    """Per-token dense rewards for one episode (0 except at code lines' last tokens)."""
    out = [0.0] * n_tokens
    lam = weight_correct if solved else weight_incorrect
    for r in replies:
        code = r.code
        if len(code) != len(r.scores):
            raise ValueError(f"reply at token {r.start}: {len(code)} code lines but {len(r.scores)} scores")
        for ln, s in zip(code, r.scores):
            out[r.start + ln.last_token] += lam * s / len(code)
    return out


def line_stats(replies: list[ReplyScores]) -> dict[str, float]:
    """Reward-hacking watch: code lines per attempt, comment share, mean PRM score."""
    scores = [s for r in replies for s in r.scores]
    return {**line_shares([[ln.kind for ln in r.lines] for r in replies]),
            "score_mean": sum(scores) / len(scores) if scores else 0.0}
