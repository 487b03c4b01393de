"""`proctor sandbox judge` and the Ray Serve judge service."""

import json
import socket
import urllib.error
import urllib.request

import pytest

from proctor.cluster.cli import main

PROBLEM = {"id": "add", "prompt": "Write add(a, b).", "kind": "assert", "entry_point": "add",
           "public_tests": [{"code": "assert add(1, 2) == 3"}], "private_tests": [{"code": "assert add(-1, 1) == 0"}],
           "time_limit_s": 2.0, "memory_mb": 256}


def test_cli_judge_writes_one_row_per_solution(tmp_path, capsys):
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps(PROBLEM) + "\n")
    solutions = tmp_path / "s.jsonl"
    rows = [{"id": "add", "code": "def add(a, b):\n    return a + b\n", "tag": "right"},
            {"id": "add", "code": "def add(a, b):\n    return a - b\n", "tag": "wrong"},
            {"id": "add", "code": "no code here", "tag": "garbage"}]
    solutions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.jsonl"
    assert main(["sandbox", "judge", "--dataset", str(problems), "--solutions", str(solutions), "--out", str(out)]) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["tag"], r["verdict"]) for r in results] == [("right", "pass"), ("wrong", "fail"), ("garbage", "fail")]
    assert results[0]["feedback"] == ""
    assert results[1]["feedback"].startswith("Your code failed the following tests:")
    assert "Give it another try" in results[1]["feedback"]
    assert [t["status"] for t in results[1]["tests"]] == ["wrong_answer", "wrong_answer"]
    assert "1 pass, 2 fail, 0 infra_error" in capsys.readouterr().err.replace("\n", " ")

    public = tmp_path / "pub.jsonl"
    main(["sandbox", "judge", "--problems", str(problems), "--solutions", str(solutions), "--tests", "public",
          "--out", str(public)])
    assert all(len(json.loads(line)["tests"]) == 1 for line in public.read_text().splitlines())


def test_cli_judge_bad_solution_row_names_it(tmp_path, capsys):
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps(PROBLEM) + "\n")
    solutions = tmp_path / "s.jsonl"
    solutions.write_text(json.dumps({"id": "add", "code": "x"}) + "\n" + json.dumps({"id": "mul", "code": "y"}) + "\n")
    assert main(["sandbox", "judge", "--problems", str(problems), "--solutions", str(solutions)]) == 2
    assert "s.jsonl line 2 (id 'mul'): field id: no problem with id 'mul'" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_service_refuses_non_loopback_without_token():
    from proctor.sandbox_pool.serve import check_bind

    with pytest.raises(ValueError, match="needs a bearer token"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "secret")
    check_bind("127.0.0.1", None)


@pytest.mark.slow
def test_service_judges_over_http_with_token(ray_local):
    from ray import serve

    from proctor.sandbox_pool.serve import start

    url = start("127.0.0.1", _free_port(), token="s3cret", slots=2)
    try:
        good = {"problem": PROBLEM, "code": "def add(a, b):\n    return a + b\n"}
        assert _post(url, good)[0] == 401
        assert _post(url, good, token="wrong")[0] == 401
        status, body = _post(url, good, token="s3cret")
        assert status == 200 and body["verdict"] == "pass" and len(body["tests"]) == 2, body
        status, body = _post(url, {**good, "code": "def add(a, b):\n    return 0\n", "tests": "public"}, "s3cret")
        assert status == 200 and body["verdict"] == "fail" and "Your code failed" in body["feedback"]
        bad = {"problem": {**PROBLEM, "kind": "sql"}, "code": "x"}
        status, body = _post(url, bad, token="s3cret")
        assert status == 422 and "field kind" in body["error"]
    finally:
        serve.shutdown()
