"""Lines of a reply, each with the token that completes it (PSGPO scores a line at its last token).

A reply is the model's text around a fenced code block. The lines of the code that runs (the block
``sandbox_pool.code`` extracts, so the PRM and the sandbox read a reply the same way) are ``code``,
``comment`` (``#`` first) or ``blank``; every other line (fences, prose, other blocks) is ``prose``.
Only code lines are scored and labelled; the others are neutral (reward 0), so neither comments nor
chatter can earn process reward. A reply without valid code has no code lines (RLEF counts it
invalid).

Token positions come from the reply's own ids (token in, token out): the character offset where
each token ends is measured by decoding growing prefixes, so a token that spans a newline (``:\\n``,
``\\n    ``) is handled exactly. ``last_token`` is the first token whose decoded prefix holds the
line's final character: the earliest point where the whole line is visible.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from proctor.sandbox_pool.code import code_span


@dataclass(frozen=True)
class Line:
    index: int          # 0-based line number in the reply text
    text: str
    kind: str           # code | comment | blank | prose
    last_token: int     # index into the reply's token ids; -1 for an empty line with no character of its own

    @property
    def scored(self) -> bool:
        return self.kind == "code"


def classify(text: str, entry_point: str | None = None) -> list[tuple[str, str]]:
    """(line text, kind) for every line of ``text`` (split on ``\\n``); ``entry_point`` picks the block
    as the sandbox does (the one that defines it)."""
    span = code_span(text, entry_point)
    a, b = span if span else (0, 0)
    out, start = [], 0
    for line in text.split("\n"):
        if a <= start < b:  # a line of the code that runs (cut where the block ends mid-line)
            s = text[start:min(start + len(line), b)].strip()
            out.append((line, "blank" if not s else "comment" if s.startswith("#") else "code"))
        else:
            out.append((line, "prose"))
        start += len(line) + 1
    return out


def token_ends(tokenizer, ids: list[int]) -> list[int]:
    """Character offset (in ``decode(ids)``) where each token's text ends."""
    ends, text_len = [], 0
    for i in range(len(ids)):
        text_len = len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True))
        ends.append(text_len)
    return ends


def reply_lines(tokenizer, ids: list[int], entry_point: str | None = None) -> list[Line]:
    """The lines of the decoded reply ``ids``, classified, each with its last token."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    ends = token_ends(tokenizer, ids)
    lines, start = [], 0
    for i, (line, kind) in enumerate(classify(text, entry_point)):
        if line:
            last_char = start + len(line) - 1
            # first token whose text reaches past last_char (ends are non-decreasing)
            tok = bisect.bisect_right(ends, last_char)
            last = tok if tok < len(ids) else len(ids) - 1
        else:
            last = -1
        lines.append(Line(i, line, kind, last))
        start += len(line) + 1
    return lines


def line_shares(kinds: list[list[str]]) -> dict[str, float]:
    """Reward-hacking watch over replies (each a list of line kinds): code lines per reply and the
    share of comments among code + comment lines."""
    code = sum(k.count("code") for k in kinds)
    comments = sum(k.count("comment") for k in kinds)
    return {"code_lines_per_attempt": code / max(len(kinds), 1), "comment_ratio": comments / max(code + comments, 1)}
