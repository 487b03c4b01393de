"""RLEF episodes: multi-turn code generation grounded in execution feedback (Gehring et al. 2024).

The model answers the problem; each reply's code runs on the public tests; on failure the feedback
becomes the next user turn; the episode ends when the public tests pass or after ``max_turns``.
The final code is then judged on the private tests, which decide the reward.

Token in, token out: the episode's ``token_ids`` are the first prompt, then each reply's sampled ids
unchanged, then only the template's delta tokens for each new user turn (earlier turns are never
re-tokenised), so the trainer scores exactly the tokens the sampler produced.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace

from proctor.problems.format import Problem
from proctor.rollout.prompts import first_turn
from proctor.rollout.types import Episode, Generation, Generator, SamplingSpec, Turn
from proctor.sandbox_pool.code import extract_code
from proctor.sandbox_pool.feedback import RETRY, feedback_text
from proctor.sandbox_pool.judge import DEFAULT_OUTPUT_BYTES, Verdict
from proctor.sandbox_pool.judge import judge as judge_in_sandbox
from proctor.sandbox_pool.runner import Sandbox

JudgeFn = Callable[[Problem, str, str], Awaitable[Verdict]]  # (problem, code, which) -> verdict
FEEDBACK_MODES = ("text", "random", "none")
NO_CODE = "Your reply contained no code I could run. " + RETRY
_SENTINEL = "PROCTOR_SENTINEL_a9f3"
DEFAULT_SPEC = SamplingSpec()


def local_judge(sandbox: Sandbox, output_bytes: int = DEFAULT_OUTPUT_BYTES) -> JudgeFn:
    """A JudgeFn over an in-process Sandbox (its blocking judge runs in a worker thread)."""
    async def run(problem: Problem, code: str, which: str) -> Verdict:
        return await asyncio.to_thread(judge_in_sandbox, sandbox, problem, code, which, output_bytes)
    return run


class Conversation:
    """Token-in, token-out chat builder over a HF tokenizer with a chat template."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.messages: list[dict] = []  # text, for debugging and for rendering the template's deltas
        self.token_ids: list[int] = []
        self.action_mask: list[int] = []
        self.logprobs: list[float] = []
        self._last_reply_ids: list[int] = []

    def _render(self, messages: list[dict], gen_prompt: bool) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt)

    def _append_prompt(self, text: str) -> list[int]:
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        self.token_ids += ids
        self.action_mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)
        return ids

    def start(self, user_text: str) -> list[int]:
        """Begin with one user turn; returns the prompt ids (ending with the generation prompt)."""
        self.messages, self.token_ids, self.action_mask, self.logprobs = [], [], [], []
        self.messages.append({"role": "user", "content": user_text})
        return self._append_prompt(self._render(self.messages, True))

    def add_reply(self, gen: Generation) -> tuple[int, int]:
        """Append the sampled ids unchanged; returns their [start, end) span."""
        if len(gen.logprobs) != len(gen.token_ids):
            raise ValueError(f"{len(gen.token_ids)} sampled ids but {len(gen.logprobs)} logprobs")
        start = len(self.token_ids)
        self.token_ids += gen.token_ids
        self.action_mask += [1] * len(gen.token_ids)
        self.logprobs += list(gen.logprobs)
        self._last_reply_ids = list(gen.token_ids)
        self.messages.append({"role": "assistant",
                              "content": self.tok.decode(gen.token_ids, skip_special_tokens=True)})
        return start, len(self.token_ids)

    def add_user(self, text: str) -> list[int]:
        """Append only the delta tokens: the assistant turn's closing tail, the user turn, the generation prompt.

        The tail is what the template puts after an assistant message's content (found by rendering a
        sentinel content), minus the end-of-turn token when the sampled ids already end with it.
        """
        if not self.messages or self.messages[-1]["role"] != "assistant":
            raise ValueError("add_user must follow add_reply")
        history = [*self.messages[:-1], {"role": "assistant", "content": _SENTINEL}]
        closed = self._render(history, False)
        extended = self._render([*history, {"role": "user", "content": text}], True)
        if _SENTINEL not in closed or not extended.startswith(closed):
            raise ValueError("the chat template cannot be extended turn by turn: rendering a sentinel assistant "
                             "turn did not give a stable prefix (does the template render assistant turns?)")
        tail = closed[closed.rindex(_SENTINEL) + len(_SENTINEL):]
        last = self._last_reply_ids[-1] if self._last_reply_ids else None
        if last is not None and last in self.tok.all_special_ids:
            eot = self.tok.convert_ids_to_tokens(last)
            if tail.startswith(eot):
                tail = tail[len(eot):]
        self.messages.append({"role": "user", "content": text})
        return self._append_prompt(tail + extended[len(closed):])


class FeedbackBank:
    """Recent (problem_id, feedback text) pairs, for RLEF's random-feedback ablation."""

    def __init__(self, maxlen: int = 256):
        self.items: deque[tuple[str, str]] = deque(maxlen=maxlen)

    def add(self, problem_id: str, text: str) -> None:
        self.items.append((problem_id, text))

    def sample(self, exclude_id: str, rng: random.Random) -> str | None:
        """Feedback recorded for a different problem, or None when there is none yet."""
        others = [text for pid, text in self.items if pid != exclude_id]
        return rng.choice(others) if others else None


class FeedbackPolicy:
    """The user turn after a failed attempt, by mode: real feedback, none (retry only), or random."""

    def __init__(self, mode: str = "text", bank: FeedbackBank | None = None, rng: random.Random | None = None):
        if mode not in FEEDBACK_MODES:
            raise ValueError(f"feedback must be one of {FEEDBACK_MODES}, got {mode!r}")
        if mode == "random" and bank is None:
            raise ValueError("feedback='random' needs a FeedbackBank shared across problems")
        self.mode, self.bank, self.rng = mode, bank, rng or random.Random()

    def __call__(self, problem: Problem, code: str | None, verdict: Verdict | None) -> str:
        if code is None:
            return NO_CODE
        real = feedback_text(verdict)
        other = self.bank.sample(problem.id, self.rng) if self.mode == "random" else None
        if self.bank is not None:
            self.bank.add(problem.id, real)
        if self.mode == "none":
            return RETRY
        return other or real


# Turn logic shared by run_episode and RLEFEnv (they differ only in how they call the judge).

def needs_public_run(problem: Problem, code: str | None) -> bool:
    return code is not None and bool(problem.public_tests)


def close_turn(problem: Problem, reply: str, code: str | None, verdict: Verdict | None, *,
               last: bool, feedback: FeedbackPolicy) -> tuple[Turn, bool]:
    """The turn record after its public run (``verdict`` None if there was none) and whether the episode ends.

    An infra error on the public tests ends the episode: it is dropped, not scored (see ``known_private``).
    """
    statuses = [t.status for t in verdict.tests] if verdict else []
    passed = code is not None and (verdict is None or verdict.passed)
    done = passed or last or "infra_error" in statuses
    text = "" if done else feedback(problem, code, verdict)
    return Turn(reply, code, statuses, passed, text, version=-1, prompt_end=-1, reply_span=(0, 0)), done


def known_private(turn: Turn) -> Verdict | None:
    """The private verdict when it needs no run: an invalid final turn fails, a public infra error stays one."""
    if "infra_error" in turn.public_statuses:
        return Verdict("infra_error")
    return Verdict("fail") if turn.code is None else None


async def run_episode(problem: Problem, generator: Generator, judge: JudgeFn, tokenizer, *, max_turns: int = 3,
                      spec: SamplingSpec = DEFAULT_SPEC, feedback: str = "text",
                      feedback_bank: FeedbackBank | None = None, rng: random.Random | None = None) -> Episode:
    """One RLEF rollout of ``problem``: up to ``max_turns`` attempts, then the private verdict."""
    if max_turns < 1:
        raise ValueError("max_turns must be >= 1")
    policy = FeedbackPolicy(feedback, feedback_bank, rng)
    spec = replace(spec, n=1)
    conv = Conversation(tokenizer)
    conv.start(first_turn(problem))
    turns: list[Turn] = []
    for i in range(max_turns):
        prompt_end = len(conv.token_ids) - 1
        gens = await generator.generate(list(conv.token_ids), spec)
        if len(gens) != 1:
            raise ValueError(f"asked for 1 continuation, got {len(gens)}")
        span = conv.add_reply(gens[0])
        reply = conv.messages[-1]["content"]  # decoded without special tokens
        code = extract_code(reply, problem.entry_point)
        verdict = await judge(problem, code, "public") if needs_public_run(problem, code) else None
        turn, done = close_turn(problem, reply, code, verdict, last=i == max_turns - 1, feedback=policy)
        turns.append(replace(turn, version=gens[0].version, prompt_end=prompt_end, reply_span=span))
        if done:
            break
        conv.add_user(turn.feedback)
    private = known_private(turns[-1]) or await judge(problem, turns[-1].code, "private")
    return Episode(problem.id, conv.token_ids, conv.action_mask, conv.logprobs, turns,
                   private.verdict, [t.status for t in private.tests], problem.entry_point)
