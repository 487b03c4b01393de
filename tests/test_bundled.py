"""The bundled training set: valid, original, and every reference solution passes its tests."""

import difflib

import pytest

from proctor.problems import load_problems, load_solutions
from proctor.problems.load import BUNDLED_DIR
from proctor.sandbox_pool.judge import judge_many


@pytest.fixture(scope="module")
def bundled():
    problems = load_problems("bundled")
    solutions = load_solutions(BUNDLED_DIR / "solutions.jsonl", {p.id: p for p in problems})
    return problems, {s["id"]: s["code"] for s in solutions}


def test_size_kinds_and_tests(bundled):
    problems, solutions = bundled
    assert len(problems) >= 100
    kinds = {k: sum(p.kind == k for p in problems) for k in ("assert", "stdin_stdout")}
    assert kinds["assert"] >= 30 and kinds["stdin_stdout"] >= 30, kinds
    assert all(p.public_tests and len(p.private_tests) >= 2 for p in problems)
    assert all(p.entry_point for p in problems if p.kind == "assert")
    assert set(solutions) == {p.id for p in problems}, "one reference solution per problem"


def test_not_copied_from_humaneval(bundled):
    problems, _ = bundled
    humaneval = load_problems("humaneval")
    he_names = {p.entry_point for p in humaneval}
    assert not he_names & {p.entry_point for p in problems}
    he_prompts = [p.prompt for p in humaneval]
    for p in problems:
        close = difflib.get_close_matches(p.prompt, he_prompts, n=1, cutoff=0.6)
        assert not close, (p.id, close)


def test_reference_solutions_pass_every_test(bundled, sandbox):
    problems, solutions = bundled
    verdicts = judge_many(sandbox, [(p, solutions[p.id]) for p in problems], "all")
    failed = {p.id: [(t.status, t.detail[-200:]) for t in v.tests if t.status != "pass"]
              for p, v in zip(problems, verdicts) if not v.passed}
    assert not failed, failed


def test_wrong_solutions_fail_public_and_private(bundled, sandbox):
    problems, _ = bundled
    wrong = [(p, f"def {p.entry_point}(*args, **kwargs):\n    pass\n" if p.kind == "assert" else "")
             for p in problems]
    verdicts = judge_many(sandbox, wrong, "all")
    for p, v in zip(problems, verdicts):
        assert any(t.public and t.status != "pass" for t in v.tests), f"{p.id}: public tests pass a stub"
        assert any(not t.public and t.status != "pass" for t in v.tests), f"{p.id}: private tests pass a stub"


def test_the_warmup_set_is_easy_original_and_correct(sandbox):
    """``warmup``: one-line function problems for a first run; every reference solution passes, a stub
    fails, and no problem is a HumanEval problem (HumanEval is the held-out set)."""
    problems = load_problems("warmup")
    assert len(problems) == 64 and all(p.kind == "assert" and p.entry_point for p in problems)
    assert all(len(p.public_tests) >= 1 and len(p.private_tests) >= 3 for p in problems)
    solutions = {s["id"]: s["code"] for s in load_solutions(BUNDLED_DIR / "warmup_solutions.jsonl",
                                                               {p.id: p for p in problems})}
    assert set(solutions) == {p.id for p in problems}
    verdicts = judge_many(sandbox, [(p, solutions[p.id]) for p in problems], "all")
    assert [p.id for p, v in zip(problems, verdicts) if not v.passed] == []
    stubs = judge_many(sandbox, [(p, f"def {p.entry_point}(*args):\n    return None\n") for p in problems], "all")
    assert not any(v.passed for v in stubs)
    humaneval = load_problems("humaneval")
    assert not {p.entry_point for p in problems} & {p.entry_point for p in humaneval}
    he_prompts = [p.prompt for p in humaneval]
    assert [p.id for p in problems if difflib.get_close_matches(p.prompt, he_prompts, n=1, cutoff=0.6)] == []
