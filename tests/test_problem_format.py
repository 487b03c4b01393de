import json

import pytest

from proctor.problems import DataError, load_problems, load_solutions
from proctor.problems.format import AssertTest, Problem, ProblemError, StdioTest, parse_problem

GOOD_ASSERT = {
    "id": "add", "prompt": "Write add(a, b).", "kind": "assert", "entry_point": "add",
    "public_tests": [{"code": "assert add(1, 2) == 3"}], "private_tests": [{"code": "assert add(-1, 1) == 0"}],
    "time_limit_s": 2.0, "memory_mb": 256,
}
GOOD_STDIO = {
    "id": "double", "prompt": "Read n, print 2n.", "kind": "stdin_stdout", "entry_point": None,
    "public_tests": [{"input": "2\n", "output": "4\n"}], "private_tests": [{"input": "5\n", "output": "10\n"}],
    "time_limit_s": 2.0, "memory_mb": 256,
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_both_kinds_load_from_jsonl(tmp_path):
    problems = load_problems(str(write_jsonl(tmp_path / "p.jsonl", [GOOD_ASSERT, GOOD_STDIO])))
    assert [p.id for p in problems] == ["add", "double"]
    assert isinstance(problems[0].public_tests[0], AssertTest)
    assert isinstance(problems[1].private_tests[0], StdioTest)
    assert problems[1].private_tests[0].output == "10\n"
    assert problems[0].time_limit_s == 2.0 and problems[0].memory_mb == 256


def test_parquet_loads_the_same(tmp_path):
    import datasets

    rows = [GOOD_ASSERT, GOOD_STDIO]
    path = tmp_path / "p.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    from_parquet = load_problems(str(path))
    from_jsonl = load_problems(str(write_jsonl(tmp_path / "p.jsonl", rows)))
    assert from_parquet == from_jsonl


def test_limit_keeps_the_first_rows(tmp_path):
    rows = [dict(GOOD_ASSERT, id=f"p{i}") for i in range(5)]
    assert [p.id for p in load_problems(str(write_jsonl(tmp_path / "p.jsonl", rows)), limit=2)] == ["p0", "p1"]


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({k: v for k, v in GOOD_ASSERT.items() if k != "private_tests"}, "field private_tests: Field required"),
        (dict(GOOD_ASSERT, kind="function"), "field kind"),
        (dict(GOOD_STDIO, public_tests=[{"input": "1\n"}]), "public_tests[0].output: Field required"),
        (dict(GOOD_ASSERT, private_tests=[{"input": "1", "output": "2"}]), "private_tests[0]"),
        (dict(GOOD_ASSERT, time_limit_s=-1), "field time_limit_s"),
        (dict(GOOD_ASSERT, entry_point="not an identifier"), "entry_point"),
        (dict(GOOD_ASSERT, privat_tests=[]), "field privat_tests: Extra inputs are not permitted"),
        (dict(GOOD_ASSERT, private_tests=[]), "field private_tests"),
    ],
)
def test_malformed_row_names_line_id_and_field(tmp_path, row, needle):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD_STDIO, row])
    with pytest.raises(DataError) as e:
        load_problems(str(path))
    msg = str(e.value)
    assert str(path) in msg and "line 2" in msg and f"(id {row['id']!r})" in msg, msg
    assert needle in msg, msg


def test_invalid_json_line_is_named(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(GOOD_ASSERT) + "\n\n" + '{"id": "x", "prompt": \n')
    with pytest.raises(DataError, match=r"broken.jsonl line 3: not valid JSON"):
        load_problems(str(path))


def test_duplicate_ids_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [GOOD_ASSERT, GOOD_ASSERT])
    with pytest.raises(DataError, match="'add' appears more than once"):
        load_problems(str(path))


def test_unknown_source_lists_what_is_accepted():
    with pytest.raises(DataError, match=r"unknown dataset 'no-such-thing'.*humaneval"):
        load_problems("no-such-thing")


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_problems(str(path))


def test_parse_problem_is_strict_about_test_shape():
    with pytest.raises(ProblemError, match="where: "):
        parse_problem(dict(GOOD_STDIO, public_tests=[{"code": "assert True"}]), "where")
    p = Problem.model_validate(GOOD_STDIO)
    assert len(p.tests) == 2


def test_solutions_file_checks_ids(tmp_path):
    problems = {p.id: p for p in load_problems(str(write_jsonl(tmp_path / "p.jsonl", [GOOD_ASSERT])))}
    good = write_jsonl(tmp_path / "s.jsonl", [{"id": "add", "code": "def add(a, b): return a + b", "tag": "ref"}])
    assert load_solutions(good, problems)[0]["tag"] == "ref"
    bad = write_jsonl(tmp_path / "s2.jsonl", [{"id": "add", "code": "x"}, {"id": "sub", "code": "y"}])
    with pytest.raises(DataError, match=r"s2.jsonl line 2 \(id 'sub'\): field id: no problem"):
        load_solutions(bad, problems)
