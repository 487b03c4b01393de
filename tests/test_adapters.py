"""Hub-schema adapters: sample rows in each schema load through ``load_problems`` and judge correctly."""

from __future__ import annotations

import base64
import collections
import json
import pickle
import zlib
from pathlib import Path

import pytest

from proctor.problems import DataError, load_problems
from proctor.problems.adapters import ADAPTERS, HUB_NAMES, decode_lcb_tests
from proctor.sandbox_pool.judge import judge

HUB = Path(__file__).parent / "data" / "hub"

# LiveCodeBench rows carry no solutions; these are the reference solutions of the sample rows.
LCB_SOLUTIONS = {
    "lcb/sample_even_total": "n = int(input())\nprint(sum(x for x in map(int, input().split()) if x % 2 == 0))\n",
    "lcb/sample_word_reversal": "print(' '.join(reversed(input().split())))\n",
    "lcb/9003": (
        "class Solution:\n    def countAbove(self, nums: list[int], k: int) -> int:\n"
        "        return sum(1 for x in nums if x > k)\n"
    ),
}


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (HUB / name).read_text().splitlines() if line.strip()]


def _wrong(problem) -> str:
    if problem.kind == "stdin_stdout":
        return 'print("wrong")\n'
    if problem.starter_code and "class Solution" in problem.starter_code:
        return f"class Solution:\n    def {problem.entry_point}(self, *a, **k):\n        return None\n"
    return f"def {problem.entry_point}(*a, **k):\n    pass\n"


def _check_judged(sandbox, problem, solution: str) -> None:
    verdict = judge(sandbox, problem, solution)
    assert verdict.passed, (problem.id, [(t.status, t.detail) for t in verdict.tests])
    assert not judge(sandbox, problem, _wrong(problem)).passed, problem.id


def _load(adapter: str, file: str):
    return load_problems(f"{adapter}:{HUB / file}")


def test_registry():
    assert set(ADAPTERS) == {"mbpp", "codecontests", "apps", "livecodebench"}
    assert HUB_NAMES == {
        "google-research-datasets/mbpp": "mbpp",
        "mbpp": "mbpp",
        "deepmind/code_contests": "codecontests",
        "codeparrot/apps": "apps",
        "livecodebench/code_generation_lite": "livecodebench",
    }


def test_mbpp_full(sandbox):
    problems = _load("mbpp", "mbpp.jsonl")
    rows = _rows("mbpp.jsonl")
    assert [p.id for p in problems] == ["mbpp/1001", "mbpp/1002", "mbpp/1003"]
    # 1002's test calls set(long_words(...)); 1003's code defines a helper before rotate_right.
    assert [p.entry_point for p in problems] == ["digit_sum", "long_words", "rotate_right"]
    assert all(p.kind == "assert" and p.starter_code is None for p in problems)
    assert [(len(p.public_tests), len(p.private_tests)) for p in problems] == [(1, 3), (1, 4), (1, 3)]
    assert problems[0].prompt == f"{rows[0]['text']}\nYour code should pass these tests:\n{rows[0]['test_list'][0]}"
    assert problems[1].private_tests[-1].code.startswith("SENTENCE = 'a bb ccc dddd'\n")
    assert problems[0].public_tests[0].code == rows[0]["test_list"][0]
    for problem, row in zip(problems, rows, strict=True):
        _check_judged(sandbox, problem, row["code"])


def test_mbpp_sanitized(sandbox):
    problems = _load("mbpp", "mbpp_sanitized.jsonl")
    rows = _rows("mbpp_sanitized.jsonl")
    assert [(p.id, p.entry_point) for p in problems] == [("mbpp/2001", "is_square"), ("mbpp/2002", "product")]
    assert problems[0].prompt.startswith(rows[0]["prompt"])
    assert problems[1].public_tests[0].code == "import math\n" + rows[1]["test_list"][0]
    assert [(len(p.public_tests), len(p.private_tests)) for p in problems] == [(1, 3), (1, 3)]
    for problem, row in zip(problems, rows, strict=True):
        _check_judged(sandbox, problem, row["code"])


def test_codecontests(sandbox):
    problems = _load("codecontests", "codecontests.jsonl")
    rows = _rows("codecontests.jsonl")
    assert [p.id for p in problems] == ["codecontests/9001_A. Best Pair", "codecontests/9001_B. Bracket Check"]
    assert all(p.kind == "stdin_stdout" and p.entry_point is None for p in problems)
    assert problems[0].prompt == rows[0]["description"]
    assert (problems[0].time_limit_s, problems[0].memory_mb) == (2.5, 256)
    assert (problems[1].time_limit_s, problems[1].memory_mb) == (10.0, 1024)  # null / 0 limits
    assert [(len(p.public_tests), len(p.private_tests)) for p in problems] == [(1, 2), (1, 2)]
    # B has no private tests: its generated tests stand in.
    assert problems[1].private_tests[1].input == rows[1]["generated_tests"]["input"][1]
    for problem, row in zip(problems, rows, strict=True):
        assert row["solutions"]["language"][0] == 3  # PYTHON3
        _check_judged(sandbox, problem, row["solutions"]["solution"][0])


def test_codecontests_falls_back_to_public_tests(tmp_path):
    row = _rows("codecontests.jsonl")[1]
    row["generated_tests"] = {"input": [], "output": []}
    row["time_limit"] = {"seconds": 5000, "nanos": 0}
    row["memory_limit_bytes"] = 2**40
    path = tmp_path / "cc.jsonl"
    path.write_text(json.dumps(row) + "\n")
    [problem] = load_problems(f"codecontests:{path}")
    assert problem.private_tests == problem.public_tests
    assert (problem.time_limit_s, problem.memory_mb) == (600.0, 65536)


def test_apps(sandbox):
    problems = _load("apps", "apps.jsonl")
    rows = _rows("apps.jsonl")
    assert [(p.id, p.kind, p.entry_point) for p in problems] == [
        ("apps/90001", "stdin_stdout", None),
        ("apps/90002", "stdin_stdout", None),
        ("apps/90003", "assert", "countPairs"),
    ]
    assert [(len(p.public_tests), len(p.private_tests)) for p in problems] == [(1, 3), (1, 2), (1, 4)]
    assert problems[0].starter_code is None
    assert problems[2].starter_code == rows[2]["starter_code"]
    assert problems[1].private_tests[0].input == "3\n1 9 9"  # a list of lines, joined
    assert "Solution().countPairs(*_args)" in problems[2].public_tests[0].code
    for problem, row in zip(problems, rows, strict=True):
        _check_judged(sandbox, problem, json.loads(row["solutions"])[0])


def test_livecodebench(sandbox):
    problems = _load("livecodebench", "livecodebench.jsonl")
    assert [(p.id, p.kind, p.entry_point) for p in problems] == [
        ("lcb/sample_even_total", "stdin_stdout", None),
        ("lcb/sample_word_reversal", "stdin_stdout", None),
        ("lcb/9003", "assert", "countAbove"),
    ]
    # Row 1 has plain JSON private tests, rows 2 and 3 the compressed form.
    assert [(len(p.public_tests), len(p.private_tests)) for p in problems] == [(1, 2), (1, 3), (2, 3)]
    assert problems[1].private_tests[0].input == "a b c\n"
    assert problems[2].starter_code.startswith("class Solution:")
    for problem in problems:
        _check_judged(sandbox, problem, LCB_SOLUTIONS[problem.id])


@pytest.mark.parametrize(
    ("adapter", "file", "field"),
    [
        ("mbpp", "mbpp.jsonl", "test_list"),
        ("codecontests", "codecontests.jsonl", "description"),
        ("apps", "apps.jsonl", "input_output"),
        ("livecodebench", "livecodebench.jsonl", "private_test_cases"),
    ],
)
def test_missing_field_names_file_line_and_field(tmp_path, adapter, file, field):
    rows = _rows(file)[:2]
    del rows[1][field]
    path = tmp_path / f"broken_{adapter}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        load_problems(f"{adapter}:{path}")
    message = str(err.value)
    assert path.name in message and "line 2" in message and f"field {field}" in message, message


def test_apps_invalid_input_output(tmp_path):
    row = _rows("apps.jsonl")[0]
    row["input_output"] = ""
    path = tmp_path / "apps.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"line 1 .*field input_output"):
        load_problems(f"apps:{path}")


def _compress(obj) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(obj))).decode()


class _Touch:
    """Unpickling this would create ``path``: the way a malicious pickle runs code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({str(self.path)!r}, 'w').close()",))


def test_lcb_decoder_refuses_classes(tmp_path):
    tests = [{"input": "1\n", "output": "1\n", "testtype": "stdin"}]
    assert decode_lcb_tests(_compress(json.dumps(tests))) == tests
    with pytest.raises(pickle.UnpicklingError, match="OrderedDict"):
        decode_lcb_tests(_compress(collections.OrderedDict()))
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError):
        decode_lcb_tests(_compress(_Touch(marker)))
    assert not marker.exists()

    row = _rows("livecodebench.jsonl")[0]
    row["private_test_cases"] = _compress(_Touch(marker))
    path = tmp_path / "lcb.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"line 1 .*field private_test_cases: cannot decode"):
        load_problems(f"livecodebench:{path}")
    assert not marker.exists()
