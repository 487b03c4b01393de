"""RLEF's outcome reward (Gehring et al. 2024): per turn, from the turn's code and the final verdict.

A turn without valid code pays ``invalid_turn``; the final turn gets ``success`` / ``failure`` from
the PRIVATE tests; every other turn is followed by another attempt and pays ``turn_cost`` (0 in
RLEF); a retry that makes no new attempt pays ``repeat_cost`` (0 in RLEF; which retries count:
``repeat_scope``). Works on any turn with a ``code`` attribute and any episode with ``turns``,
``private_verdict`` and ``entry_point`` (``rollout.types``' Turn and Episode): this module imports no
other package.
"""

from __future__ import annotations

import ast

from proctor.reward.config import RewardConfig

RETRY_KINDS = ("changed", "resubmitted", "no_function", "no_code")


def resubmits(turn, earlier: list | tuple) -> bool:
    """Whether ``turn`` holds valid code that one of the ``earlier`` turns of its episode already ran."""
    return turn.code is not None and any(t.code == turn.code for t in earlier)


def defines(code: str, name: str) -> bool:
    """Whether ``code`` defines the function ``name`` at its top level (False when it does not parse)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):  # a deep expression overflows the parser or ast.dump
        return False
    return any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name for n in tree.body)


def _canonical(code: str) -> str:
    """The code with comments and layout dropped (its syntax tree); itself, stripped, when it does not parse."""
    try:
        return ast.dump(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError):  # a deep expression overflows the parser or ast.dump
        return code.strip()


def retry_kind(turn, earlier: list | tuple, entry_point: str | None = None) -> str:
    """What a retry (a turn after feedback) holds: ``no_code``; ``resubmitted`` code an earlier turn ran
    (comments and layout ignored); new code that does not define the problem's function
    (``no_function``, e.g. the failing assertion copied back); else ``changed``."""
    if turn.code is None:
        return "no_code"
    mine = _canonical(turn.code)
    if any(t.code is not None and _canonical(t.code) == mine for t in earlier):
        return "resubmitted"
    if entry_point and not defines(turn.code, entry_point):
        return "no_function"
    return "changed"


def _pays_repeat(turn, cfg: RewardConfig, earlier, entry_point: str | None) -> bool:
    if cfg.repeat_scope == "resubmitted":
        return resubmits(turn, earlier)
    return bool(earlier) and retry_kind(turn, earlier, entry_point) != "changed"


def turn_reward(turn, cfg: RewardConfig, private_verdict: str | None = None, earlier: list | tuple = (),
                entry_point: str | None = None) -> float:
    """RLEF's reward of one turn; pass ``private_verdict`` for the final turn only (every other turn
    is followed by another attempt and pays ``turn_cost``), the episode's ``earlier`` turns and the
    problem's ``entry_point`` (read by ``repeat_scope: no_new_function``)."""
    if private_verdict == "infra_error":
        raise ValueError("the episode hit a sandbox infra error: drop it, do not score it")
    r = cfg.invalid_turn if turn.code is None else 0.0
    if _pays_repeat(turn, cfg, earlier, entry_point):
        r += cfg.repeat_cost
    if private_verdict is not None:
        return r + (cfg.success if private_verdict == "pass" else cfg.failure)
    return r + cfg.turn_cost


def rlef_rewards(episode, cfg: RewardConfig) -> list[float]:
    """Per-turn rewards: the invalid-turn penalty on invalid turns, success/failure on the last turn."""
    n = len(episode.turns)
    return [turn_reward(t, cfg, episode.private_verdict if i == n - 1 else None, episode.turns[:i],
                        getattr(episode, "entry_point", None))
            for i, t in enumerate(episode.turns)]
