"""Execution feedback for a failed attempt, in RLEF's format (Gehring et al. 2024, appendix)."""

from __future__ import annotations

from proctor.sandbox_pool.judge import TestResult, Verdict

RETRY = ("Give it another try. Your code should be enclosed in triple backticks like so: "
         "```python YOUR CODE HERE ```. Use the backticks for your code only.")


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 15] + " ... (truncated)"


def _describe(t: TestResult, field_chars: int) -> str:
    if t.status == "timeout":
        what = "Execution took too long."
    elif t.status == "memory":
        what = "Out of memory."
    elif t.status == "output_limit":
        what = "The program printed too much output."
    elif t.status == "wrong_answer" and t.expected is not None:
        what = f"Expected output `{_clip(t.expected, field_chars)}` but got `{_clip(t.detail, field_chars)}`"
    else:  # runtime error, or a failed assertion: the trimmed trace says what went wrong
        what = f"\n```\n{_clip(t.detail, field_chars * 3)}\n```" if t.detail.strip() else "It raised an error."
    return f"- input `{_clip(t.input or '', field_chars)}` failed: {what}"


def feedback_text(verdict: Verdict, *, max_tests: int = 3, field_chars: int = 300, max_chars: int = 2500) -> str:
    """The user turn appended after a failed attempt; empty for a passing verdict.

    Lists at most ``max_tests`` failed tests, each field clipped to ``field_chars``, the whole text
    to ``max_chars`` (the retry instruction is always kept)."""
    failed = [t for t in verdict.tests if t.status != "pass"]
    if verdict.passed or not failed:
        return ""
    budget = max_chars - len(RETRY) - 60  # room for the header and a "... and N more." line
    lines = ["Your code failed the following tests:", ""]
    shown = 0
    for t in failed[:max_tests]:
        line = _describe(t, field_chars)
        if sum(map(len, lines)) + len(line) > budget:
            line = _clip(line, max(budget - sum(map(len, lines)), 80))
            lines.append(line)
            shown += 1
            break
        lines.append(line)
        shown += 1
    if len(failed) > shown:
        lines.append(f"- ... and {len(failed) - shown} more.")
    return "\n".join(lines) + "\n\n" + RETRY
