"""Render a problem as the first user turn of a conversation."""

from __future__ import annotations

from proctor.problems.format import Problem

FENCE_HINT = "Your code should be enclosed in triple backticks like so: ```python YOUR CODE HERE ```."


def first_turn(problem: Problem) -> str:
    if problem.kind == "stdin_stdout":
        return (f"{problem.prompt.strip()}\n\nWrite a Python program that reads the input from standard "
                f"input and prints the answer to standard output. {FENCE_HINT}")
    if problem.starter_code and problem.starter_code.strip() == problem.prompt.strip():
        statement = f"Complete the following Python function:\n```python\n{problem.starter_code.rstrip()}\n```"
    elif problem.starter_code:
        statement = f"{problem.prompt.strip()}\n\nStart from this code:\n```python\n{problem.starter_code.rstrip()}\n```"
    else:
        statement = problem.prompt.strip()
    name = f" `{problem.entry_point}`" if problem.entry_point else ""
    return f"{statement}\n\nWrite the complete function{name} with any imports it needs. {FENCE_HINT}"
