"""RLEF as a Gymnasium environment with text observations and actions (for RLlib-style users).

An observation is a user turn (the problem, then execution feedback; "" once the episode ends); an
action is the model's reply text. Rewards follow RLEF: ``invalid_turn`` on a reply with no valid
code, plus success/failure on the final turn from the PRIVATE tests. The turn logic is the one
``rollout.episode.run_episode`` uses; only the judge call differs (synchronous here).

A sandbox infra error ends the episode as *truncated* with reward 0 and ``info["infra_error"]``:
it says nothing about the policy, so a learner should drop or bootstrap it rather than score it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import ClassVar

import gymnasium as gym

from proctor.problems.format import Problem
from proctor.reward.config import RewardConfig
from proctor.reward.outcome import turn_reward
from proctor.rollout.episode import FeedbackBank, FeedbackPolicy, close_turn, known_private, needs_public_run
from proctor.rollout.prompts import first_turn
from proctor.rollout.types import Turn
from proctor.sandbox_pool.code import extract_code
from proctor.sandbox_pool.judge import Verdict

ENV_ID = "proctor/RLEF-v0"
RAY_ENV_NAME = "proctor-rlef"
MAX_CHARS = 1 << 17  # problem statements and feedback are clipped far below this
# Every printable character of Unicode's basic plane plus the whitespace code and feedback use (the
# astral planes, mostly emoji and rare scripts, are left out to keep the space's tables small).
CHARSET = "\n\r\t" + "".join(c for c in map(chr, range(0x10000)) if c.isprintable())


class PrintableText(gym.spaces.Text):
    """A Text space over ``CHARSET`` whose repr does not print its 55k characters."""

    def __init__(self, max_length: int = MAX_CHARS):
        super().__init__(max_length=max_length, min_length=0, charset=CHARSET)

    def __repr__(self) -> str:
        return f"PrintableText(0, {self.max_length})"


class RLEFEnv(gym.Env):
    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, problems: Sequence[Problem], judge_sync: Callable[[Problem, str, str], Verdict],
                 max_turns: int = 3, feedback: str = "text", reward_cfg: RewardConfig | None = None,
                 seed: int | None = None, feedback_bank: FeedbackBank | None = None):
        if not problems:
            raise ValueError("RLEFEnv needs at least one problem")
        if max_turns < 1:
            raise ValueError("max_turns must be >= 1")
        self.problems = {p.id: p for p in problems}
        self.judge_sync, self.max_turns, self.reward_cfg = judge_sync, max_turns, reward_cfg or RewardConfig()
        self._rng = random.Random(seed)
        if feedback_bank is None and feedback == "random":
            feedback_bank = FeedbackBank()  # feedback recorded by this env's own earlier episodes
        self.feedback = FeedbackPolicy(feedback, feedback_bank, self._rng)
        self.observation_space = PrintableText()
        self.action_space = PrintableText()
        self.problem: Problem | None = None
        self.turns: list[Turn] = []
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng.seed(seed)
        pid = (options or {}).get("problem_id")
        if pid is not None and pid not in self.problems:
            raise KeyError(f"unknown problem_id {pid!r}")
        self.problem = self.problems[pid] if pid is not None else self._rng.choice(list(self.problems.values()))
        self.turns, self._done = [], False
        return first_turn(self.problem), {"problem_id": self.problem.id}

    def step(self, action: str):
        if self._done or self.problem is None:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        p = self.problem
        code = extract_code(action, p.entry_point)
        verdict = self.judge_sync(p, code, "public") if needs_public_run(p, code) else None
        turn, done = close_turn(p, action, code, verdict, last=len(self.turns) + 1 == self.max_turns,
                                feedback=self.feedback)
        self.turns.append(turn)
        info = {"public_passed": turn.public_passed, "code": code, "turn": len(self.turns) - 1}
        if not done:
            return turn.feedback, turn_reward(turn, self.reward_cfg, earlier=self.turns[:-1], entry_point=p.entry_point), False, False, info
        self._done = True
        private = known_private(turn) or self.judge_sync(p, code, "private")
        info.update(private_verdict=private.verdict, private_statuses=[t.status for t in private.tests])
        if private.verdict == "infra_error":
            return "", 0.0, False, True, {**info, "infra_error": True}
        return "", turn_reward(turn, self.reward_cfg, private.verdict, self.turns[:-1], p.entry_point), True, False, info


def register() -> None:
    """Register with Gymnasium (``ENV_ID``) and Ray Tune/RLlib (``RAY_ENV_NAME``, config = constructor kwargs)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=RLEFEnv)
    from ray.tune.registry import register_env  # lazily: importing Ray is slow

    register_env(RAY_ENV_NAME, lambda cfg: RLEFEnv(**cfg))
