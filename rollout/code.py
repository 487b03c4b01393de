"""Extract the code of a model reply: a fenced block that parses as Python, or nothing."""

from __future__ import annotations

import ast
import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PY_TAGS = {"", "python", "py", "python3"}


def code_blocks(reply: str) -> list[str]:
    return [m.group(2) for m in _FENCE.finditer(reply) if m.group(1).lower() in _PY_TAGS]


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
    blocks = [b for b in code_blocks(reply) if _parses(b)]
    defining = [b for b in blocks if entry_point and _defines(b, entry_point)]
    return (defining or blocks or [None])[0]
