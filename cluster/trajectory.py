"""Rollout episodes + their rewards -> the learner's samples (the driver converts between the packages' types)."""

from __future__ import annotations

from proctor.learner.batch import Sample
from proctor.reward.score import Scored
from proctor.rollout.types import Episode


def to_sample(episode: Episode, turn_rewards: list[float], token_rewards: list[float] | None = None) -> Sample:
    """One learner sample: the conversation's tokens, action mask and behaviour logprobs as the
    rollout recorded them, the per-turn rewards, and optional dense per-token rewards."""
    turns = episode.turns
    return Sample(token_ids=list(episode.token_ids), action_mask=list(episode.action_mask),
                  logprobs=list(episode.logprobs), turn_ends=[t.prompt_end for t in turns],
                  turn_spans=[t.reply_span for t in turns], turn_rewards=turn_rewards,
                  token_rewards=token_rewards, version=min(t.version for t in turns), id=episode.problem_id)


def to_samples(episodes: list[Episode], rewards: Scored) -> list[Sample]:
    """One sample per scored episode (``rewards`` from ``reward.score.Rewards`` over these episodes)."""
    return [to_sample(e, rewards.turn_rewards[i], rewards.dense[i] if rewards.dense else None)
            for i, e in enumerate(episodes)]
