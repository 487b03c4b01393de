"""The reward stage of an iteration: every episode's outcome reward per turn (RLEF) and, with a PRM,
its dense per-token process reward (PSGPO). The driver calls ``rewards = score(episodes)``."""

from __future__ import annotations

from dataclasses import dataclass, field

from proctor.reward.config import RewardConfig
from proctor.reward.outcome import rlef_rewards


@dataclass
class Scored:
    turn_rewards: list[list[float]]             # per episode, one reward per turn
    dense: list[list[float]] | None = None      # per episode, one reward per token; None without a PRM
    metrics: dict = field(default_factory=dict)


class Rewards:
    """``score(episodes) -> Scored``. Episodes cut short by a sandbox infra error must be dropped
    before (``scoreable``): they say nothing about the policy."""

    def __init__(self, cfg: RewardConfig, vocab: dict[str, int] | None = None, threads: int = 1):
        self.cfg = cfg
        self.process = None
        if cfg.prm:
            from proctor.reward.actor import ProcessRewards  # torch and the PRM only when a run uses them

            self.process = ProcessRewards(cfg, vocab or {}, threads)

    def __call__(self, episodes: list) -> Scored:
        turn_rewards = [rlef_rewards(e, self.cfg) for e in episodes]
        if self.process is None:
            return Scored(turn_rewards)
        dense, metrics = self.process(episodes)
        return Scored(turn_rewards, dense, metrics)

    def shutdown(self) -> None:
        if self.process is not None:
            self.process.shutdown()


def scoreable(episodes: list) -> list:
    """The episodes that say something about the policy (not cut short by a sandbox infra error)."""
    return [e for e in episodes if e.private_verdict != "infra_error"]
