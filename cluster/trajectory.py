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


def to_samples(episodes: list[Episode], reward_cfg: RewardConfig) -> tuple[list[Sample], int]:
    """Samples of the scoreable episodes, and how many were dropped for sandbox infra errors."""
    kept = [e for e in episodes if e.private_verdict != "infra_error"]
    return [to_sample(e, reward_cfg) for e in kept], len(episodes) - len(kept)
