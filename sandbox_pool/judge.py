"""Judge a candidate solution against a problem's tests, each test in its own sandbox run.

The verdict is decided here, outside the candidate: ``assert`` tests pass only on the harness's
nonce-stamped report; ``stdin_stdout`` tests pass only when the exit status is 0 and stdout equals
the expected output (lines compared with trailing whitespace removed).
"""

from __future__ import annotations

import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sandbox_pool.bwrap import ExecResult, Limits, SandboxUnavailable, run_python
from sandbox_pool.problem import AssertTest, Problem, StdioTest

Status = Literal["pass", "wrong_answer", "runtime_error", "timeout", "memory", "output_limit", "infra_error"]
Which = Literal["public", "private", "all"]

_HARNESS = (Path(__file__).parent / "harness.py").read_text()


@dataclass(frozen=True)
class TestResult:
    status: Status
    public: bool
    detail: str = ""
    wall_s: float = 0.0


@dataclass(frozen=True)
class Verdict:
    verdict: Literal["pass", "fail", "infra_error"]
    tests: list[TestResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


def normalise_output(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _limits(problem: Problem, output_bytes: int) -> Limits:
    return Limits(time_s=problem.time_limit_s, memory_mb=problem.memory_mb, output_bytes=output_bytes)


def _status_of_crash(r: ExecResult) -> Status | None:
    if r.timed_out or r.returncode in (-24, 128 + 24):  # wall limit or SIGXCPU
        return "timeout"
    if r.output_limited or "[Errno 27] File too large" in r.stderr[-500:]:  # RLIMIT_FSIZE
        return "output_limit"
    if "MemoryError" in r.stderr[-500:]:
        return "memory"
    return None


def run_test(problem: Problem, code: str, test: AssertTest | StdioTest, public: bool,
             output_bytes: int = Limits.output_bytes) -> TestResult:
    limits = _limits(problem, output_bytes)
    try:
        if isinstance(test, AssertTest):
            nonce = secrets.token_hex(16)
            r = run_python({"harness.py": _HARNESS, "solution.py": code, "test.py": test.code},
                           "harness.py", stdin=nonce + "\n", limits=limits)
            report = None
            for line in reversed(r.stdout.splitlines()):
                if line.startswith(nonce):
                    report = json.loads(line[len(nonce):])
                    break
            if report is None:
                crash = _status_of_crash(r)
                detail = r.stderr[-2000:] or f"the program ended (exit status {r.returncode}) before the test finished"
                return TestResult(crash or "runtime_error", public, detail, r.wall_s)
            return TestResult(report["status"], public, report["detail"], r.wall_s)
        r = run_python({"solution.py": code}, "solution.py", stdin=test.input, limits=limits)
        crash = _status_of_crash(r)
        if crash:
            return TestResult(crash, public, r.stderr[-2000:], r.wall_s)
        if r.returncode != 0:
            return TestResult("runtime_error", public, r.stderr[-2000:], r.wall_s)
        if normalise_output(r.stdout) != normalise_output(test.output):
            return TestResult("wrong_answer", public, r.stdout[:2000], r.wall_s)
        return TestResult("pass", public, "", r.wall_s)
    except SandboxUnavailable:
        raise
    except Exception as e:  # the judge itself failed: never a pass or a fail
        return TestResult("infra_error", public, f"{type(e).__name__}: {e}")


def judge(problem: Problem, code: str, which: Which = "all", output_bytes: int = Limits.output_bytes) -> Verdict:
    tests = []
    if which in ("public", "all"):
        tests += [(t, True) for t in problem.public_tests]
    if which in ("private", "all"):
        tests += [(t, False) for t in problem.private_tests]
    results = [run_test(problem, code, t, public, output_bytes) for t, public in tests]
    if any(r.status == "infra_error" for r in results):
        return Verdict("infra_error", results)
    return Verdict("pass" if results and all(r.status == "pass" for r in results) else "fail", results)


def judge_many(items: list[tuple[Problem, str]], which: Which = "all", workers: int = 2,
               progress=None, output_bytes: int = Limits.output_bytes) -> list[Verdict]:
    """Judge (problem, code) pairs concurrently; ``progress`` is called once per finished item."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(judge, p, c, which, output_bytes) for p, c in items]
        out = []
        for f in futures:
            out.append(f.result())
            if progress:
                progress()
        return out
