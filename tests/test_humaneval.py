"""HumanEval through the loader and the sandbox judge: canonical solutions pass, stubs fail."""

import gzip
import json

import pytest

from proctor.problems import load_problems
from proctor.problems.humaneval import humaneval_path
from proctor.sandbox_pool.judge import judge_many


@pytest.fixture(scope="module")
def humaneval():
    with gzip.open(humaneval_path(), "rt") as f:
        rows = {r["task_id"]: r for r in map(json.loads, f)}
    return load_problems("humaneval"), rows


def test_164_problems_with_public_and_private_tests(humaneval):
    problems, _ = humaneval
    assert len(problems) == 164
    assert all(p.kind == "assert" and p.entry_point for p in problems)
    assert all(1 <= len(p.public_tests) <= 3 and len(p.private_tests) == 1 for p in problems)
    # Public tests come from the prompt's examples where it has them.
    first = problems[0]
    assert first.public_tests[0].code.startswith("assert (has_close_elements([1.0, 2.0, 3.0], 0.5)) == (False)")
    assert "check(has_close_elements)" in first.private_tests[0].code


def test_canonical_solutions_pass_all_tests(humaneval, sandbox):
    problems, rows = humaneval
    items = [(p, rows[p.id]["prompt"] + rows[p.id]["canonical_solution"]) for p in problems]
    verdicts = judge_many(sandbox, items, "all")
    failed = [(p.id, [t.detail for t in v.tests if t.status != "pass"]) for p, v in zip(problems, verdicts) if not v.passed]
    assert not failed, failed[:3]


def test_pass_bodies_fail_public_and_private(humaneval, sandbox):
    problems, rows = humaneval
    items = [(p, rows[p.id]["prompt"] + "    pass\n") for p in problems]
    verdicts = judge_many(sandbox, items, "all")
    for p, v in zip(problems, verdicts):
        assert v.verdict == "fail", p.id
        assert any(not t.public and t.status != "pass" for t in v.tests), p.id
    # Public tests catch the stub too (for all but problems whose public test is trivially met).
    public_caught = sum(any(t.public and t.status != "pass" for t in v.tests) for v in verdicts)
    assert public_caught >= 160
