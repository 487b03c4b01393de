"""The code of a model reply that runs: a fenced block that parses as Python, or nothing.

One grammar for every stage: the rollout runs ``extract_code``'s block in the sandbox, and the PRM
scores the lines of exactly that block (``code_span``, read by ``reward.lines``). A fence may open
mid-line (``Here is the fix: ```python``) and may be left unclosed at the end of the reply.
"""

from __future__ import annotations

import ast
import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PY_TAGS = {"", "python", "py", "python3"}


def _block_spans(reply: str) -> list[tuple[int, int]]:
    """[start, end) of each Python fence's content in ``reply``."""
    return [m.span(2) for m in _FENCE.finditer(reply) if m.group(1).lower() in _PY_TAGS]


def code_blocks(reply: str) -> list[str]:
    return [reply[a:b] for a, b in _block_spans(reply)]


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return bool(code.strip())


def _defines(code: str, name: str) -> bool:
    tree = ast.parse(code)
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name
               for n in ast.walk(tree))


def extract_code(reply: str, entry_point: str | None = None) -> str | None:
    """The first fenced Python block that parses, preferring one that defines ``entry_point``.

    Returns None when the reply holds no valid code: RLEF counts such a turn as invalid. A block
    that parses but misses the entry point is valid code that will fail its tests.
    """
    span = code_span(reply, entry_point)
    return None if span is None else reply[span[0]:span[1]]


def code_span(reply: str, entry_point: str | None = None) -> tuple[int, int] | None:
    """[start, end) in ``reply`` of the code ``extract_code`` returns (None when there is none)."""
    spans = [s for s in _block_spans(reply) if _parses(reply[s[0]:s[1]])]
    defining = [s for s in spans if entry_point and _defines(reply[s[0]:s[1]], entry_point)]
    return (defining or spans or [None])[0]
