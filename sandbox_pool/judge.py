"""Judge a candidate against a problem's tests: one sandbox run per test, verdict decided here.

``assert`` tests pass only on the in-sandbox harness's report carrying the run's nonce (exiting
early, crashing or printing a forged report gives none); ``stdin_stdout`` tests pass only when the
exit status is 0 and stdout equals the expected output (lines compared without trailing space).
A run the sandbox itself could not complete makes the verdict ``infra_error``, never pass or fail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Literal

from proctor.problems.format import AssertTest, Problem, StdioTest
from proctor.sandbox_pool.runner import Sandbox

Status = Literal["pass", "wrong_answer", "runtime_error", "timeout", "memory", "output_limit", "infra_error"]
Which = Literal["public", "private", "all"]
DEFAULT_OUTPUT_BYTES = 1 << 20


@dataclass(frozen=True)
class TestResult:
    status: Status
    public: bool
    detail: str = ""  # trimmed traceback, or the program's (capped) output on a wrong answer
    wall_s: float = 0.0
    input: str | None = None  # what the test fed or ran, for feedback
    expected: str | None = None


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


def selected_tests(problem: Problem, which: Which) -> list[tuple[AssertTest | StdioTest, bool]]:
    tests = []
    if which in ("public", "all"):
        tests += [(t, True) for t in problem.public_tests]
    if which in ("private", "all"):
        tests += [(t, False) for t in problem.private_tests]
    return tests


def request(problem: Problem, code: str, test: AssertTest | StdioTest, output_bytes: int) -> dict:
    req = {"code": code, "time_s": problem.time_limit_s, "memory_mb": problem.memory_mb, "output_bytes": output_bytes}
    if isinstance(test, AssertTest):
        return {**req, "mode": "assert", "test": test.code}
    return {**req, "mode": "stdio", "input": test.input}


def _crash_status(res: dict) -> Status | None:
    rc, err = res["returncode"], res["stderr"][-600:]
    if res["timed_out"] or rc in (-24, 128 + 24):  # wall limit or SIGXCPU
        return "timeout"
    if "[Errno 27] File too large" in err or rc in (-25, 128 + 25):  # RLIMIT_FSIZE
        return "output_limit"
    if "MemoryError" in err:
        return "memory"
    return None


def test_result(test: AssertTest | StdioTest, public: bool, res: dict) -> TestResult:
    """Turn one raw sandbox result into a per-test status."""
    shown = {"input": test.code if isinstance(test, AssertTest) else test.input,
             "expected": None if isinstance(test, AssertTest) else test.output}
    if "infra_error" in res:
        return TestResult("infra_error", public, res["infra_error"], **shown)
    wall = res["wall_s"]
    report = res.get("report")
    if report and report["status"] == "infra_error":
        return TestResult("infra_error", public, report["detail"], wall, **shown)
    crash = _crash_status(res)
    if isinstance(test, AssertTest):
        if report is None or crash == "timeout":
            detail = res["stderr"][-2000:] or f"the program ended (exit status {res['returncode']}) before the test finished"
            return TestResult(crash or "runtime_error", public, detail, wall, **shown)
        if report["status"] == "pass" and crash == "output_limit":
            return TestResult("output_limit", public, res["stderr"][-2000:], wall, **shown)
        return TestResult(report["status"], public, report["detail"], wall, **shown)
    if crash:
        return TestResult(crash, public, res["stderr"][-2000:], wall, **shown)
    if res["returncode"] != 0:
        return TestResult("runtime_error", public, res["stderr"][-2000:], wall, **shown)
    if normalise_output(res["stdout"]) != normalise_output(test.output):
        return TestResult("wrong_answer", public, res["stdout"][:2000], wall, **shown)
    return TestResult("pass", public, "", wall, **shown)


def verdict_of(results: list[TestResult]) -> Verdict:
    if any(r.status == "infra_error" for r in results):
        return Verdict("infra_error", results)
    return Verdict("pass" if results and all(r.status == "pass" for r in results) else "fail", results)


def verdict_from(tests: list[tuple[AssertTest | StdioTest, bool]], results: Sequence[dict]) -> Verdict:
    """The verdict of ``selected_tests(...)`` given one raw sandbox result per test, in order."""
    return verdict_of([test_result(t, pub, r) for (t, pub), r in zip(tests, results, strict=True)])


def submit(sandbox: Sandbox, problem: Problem, code: str, which: Which = "all",
           output_bytes: int = DEFAULT_OUTPUT_BYTES) -> Callable[[], Verdict]:
    """Queue every selected test of ``code``; the returned function waits and gives the verdict."""
    tests = selected_tests(problem, which)
    futures: list[Future] = [sandbox.submit(request(problem, code, t, output_bytes)) for t, _ in tests]
    return lambda: verdict_from(tests, [f.result() for f in futures])


def judge(sandbox: Sandbox, problem: Problem, code: str, which: Which = "all",
          output_bytes: int = DEFAULT_OUTPUT_BYTES) -> Verdict:
    return submit(sandbox, problem, code, which, output_bytes)()


def judge_many(sandbox: Sandbox, items: Sequence[tuple[Problem, str]], which: Which = "all",
               progress: Callable[[], None] | None = None, output_bytes: int = DEFAULT_OUTPUT_BYTES,
               window: int = 64) -> list[Verdict]:
    """Judge (problem, code) pairs; at most ``window`` candidates are queued at once (back-pressure)."""
    out: list[Verdict] = []
    queued: list[Callable[[], Verdict]] = []
    for problem, code in items:
        queued.append(submit(sandbox, problem, code, which, output_bytes))
        if len(queued) >= window:
            out.append(queued.pop(0)())
            if progress:
                progress()
    for wait in queued:
        out.append(wait())
        if progress:
            progress()
    return out
