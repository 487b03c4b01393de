"""Rollout episodes -> the learner's samples (the driver converts between the packages' types)."""

from __future__ import annotations

from learner.batch import Sample
from reward.config import RewardConfig
from rollout.episode import rlef_rewards
from rollout.types import Episode


def to_sample(episode: Episode, reward_cfg: RewardConfig, token_rewards: list[float] | None = None) -> Sample:
    """One learner sample: the conversation's tokens, action mask and behaviour logprobs as the
    rollout recorded them, RLEF's per-turn rewards, and optional dense per-token rewards. Raises for
    an episode with a sandbox infra error (drop it: it says nothing about the policy)."""
    turns = episode.turns
    return Sample(token_ids=list(episode.token_ids), action_mask=list(episode.action_mask),
                  logprobs=list(episode.logprobs), turn_ends=[t.prompt_end for t in turns],
                  turn_spans=[t.reply_span for t in turns], turn_rewards=rlef_rewards(episode, reward_cfg),
                  token_rewards=token_rewards, version=min(t.version for t in turns), id=episode.problem_id)


def scoreable(episodes: list[Episode]) -> list[Episode]:
    """The episodes that say something about the policy (not cut short by a sandbox infra error)."""
    return [e for e in episodes if e.private_verdict != "infra_error"]


def to_samples(episodes: list[Episode], reward_cfg: RewardConfig,
               dense: list[list[float]] | None = None) -> list[Sample]:
    """Samples of scoreable episodes (``dense[i]``: episode i's per-token process rewards)."""
    return [to_sample(e, reward_cfg, dense[i] if dense else None) for i, e in enumerate(episodes)]
