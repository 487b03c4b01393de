"""RLEF's outcome reward (Gehring et al. 2024): per turn, from the turn's code and the final verdict.

A turn without valid code pays ``invalid_turn``; the final turn gets ``success`` / ``failure`` from
the PRIVATE tests; every other turn is followed by another attempt and pays ``turn_cost`` (0 in
RLEF); a turn that resubmits code an earlier turn already ran pays ``repeat_cost`` (0 in RLEF). Works on any turn with a ``code`` attribute and any episode with ``turns`` and
``private_verdict`` (``rollout.types``' Turn and Episode): this module imports no other package.
"""

from __future__ import annotations

from reward.config import RewardConfig


def resubmits(turn, earlier: list | tuple) -> bool:
    """Whether ``turn`` holds valid code that one of the ``earlier`` turns of its episode already ran."""
    return turn.code is not None and any(t.code == turn.code for t in earlier)


def turn_reward(turn, cfg: RewardConfig, private_verdict: str | None = None, earlier: list | tuple = ()) -> float:
    """RLEF's reward of one turn; pass ``private_verdict`` for the final turn only (every other turn
    is followed by another attempt and pays ``turn_cost``), and the episode's ``earlier`` turns."""
    if private_verdict == "infra_error":
        raise ValueError("the episode hit a sandbox infra error: drop it, do not score it")
    r = cfg.invalid_turn if turn.code is None else 0.0
    if resubmits(turn, earlier):
        r += cfg.repeat_cost
    if private_verdict is not None:
        return r + (cfg.success if private_verdict == "pass" else cfg.failure)
    return r + cfg.turn_cost


def rlef_rewards(episode, cfg: RewardConfig) -> list[float]:
    """Per-turn rewards: the invalid-turn penalty on invalid turns, success/failure on the last turn."""
    n = len(episode.turns)
    return [turn_reward(t, cfg, episode.private_verdict if i == n - 1 else None, episode.turns[:i])
            for i, t in enumerate(episode.turns)]
