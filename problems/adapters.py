"""Adapters from Hugging Face hub dataset schemas to proctor's problem format.

Each converter takes one row (a dict as ``datasets`` yields it) and a ``where`` naming it, builds a
plain dict in proctor's format and validates it with ``parse_problem``; a hub field that is missing
or of the wrong type raises ``ProblemError("<where>: field <hub field>: ...")``. Absent and ``None``
values are treated alike (the local loader drops nulls, the hub loader keeps them).
"""

from __future__ import annotations

import ast
import base64
import builtins
import io
import json
import pickle
import zlib

from proctor.problems.files import Converter
from proctor.problems.format import Problem, ProblemError, parse_problem

_REQUIRED = object()


def _get(row: dict, name: str, where: str, typ: type | tuple[type, ...], default=_REQUIRED):
    value = row.get(name)
    if value is None:
        if default is _REQUIRED:
            raise ProblemError(f"{where}: field {name}: required, missing")
        return default
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        names = " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
        raise ProblemError(f"{where}: field {name}: expected {names}, got {type(value).__name__}")
    return value


def _str_list(row: dict, name: str, where: str, default=_REQUIRED) -> list[str]:
    value = _get(row, name, where, list, default)
    if not all(isinstance(v, str) for v in value):
        raise ProblemError(f"{where}: field {name}: expected a list of strings")
    return value


def _json_field(row: dict, name: str, where: str, typ: type):
    try:
        value = json.loads(_get(row, name, where, str))
    except json.JSONDecodeError as e:
        raise ProblemError(f"{where}: field {name}: not valid JSON: {e.msg}") from None
    if not isinstance(value, typ):
        raise ProblemError(f"{where}: field {name}: expected a JSON {typ.__name__}, got {type(value).__name__}")
    return value


def _callee(starter_code: str | None, fn_name: str) -> str:
    """How a test calls the solution: a LeetCode ``class Solution`` method or a plain function."""
    return f"Solution().{fn_name}" if starter_code and "class Solution" in starter_code else fn_name


def _call_test(callee: str, args: list, expected, lenient: bool = False) -> str:
    """Assert code for one call; ``lenient`` also accepts ``[result] == expected`` (APPS wraps outputs)."""
    check = "_result == _expected or [_result] == _expected" if lenient else "_result == _expected"
    return (
        f"_args = {args!r}\n_expected = {expected!r}\n_result = {callee}(*_args)\n"
        f"assert {check}, f'{callee}(*{{_args!r}}) returned {{_result!r}}, expected {{_expected!r}}'\n"
    )


# --- MBPP (google-research-datasets/mbpp, configs "full" and "sanitized") ---


def _parse(source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])


def _mbpp_entry_point(test: str, code: str) -> str | None:
    """The function the first test calls: a called name defined in ``code``, else the first
    non-builtin called name, else the first ``def`` in ``code``."""
    defs = [n.name for n in _parse(code).body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    calls = [n for n in ast.walk(_parse(test)) if isinstance(n, ast.Call)]
    names = [c.func.id for c in sorted(calls, key=lambda c: (c.lineno, c.col_offset)) if isinstance(c.func, ast.Name)]
    for candidates in ([n for n in names if n in defs], [n for n in names if not hasattr(builtins, n)], defs):
        if candidates:
            return candidates[0]
    return None


def convert_mbpp(row: dict, where: str) -> Problem:
    task_id = _get(row, "task_id", where, (int, str))
    text = _get(row, "prompt" if row.get("text") is None and row.get("prompt") is not None else "text", where, str)
    code = _get(row, "code", where, str, "")
    tests = _str_list(row, "test_list", where)
    if not tests:
        raise ProblemError(f"{where}: field test_list: no tests")
    challenge = _str_list(row, "challenge_test_list", where, [])
    setup = _get(row, "test_setup_code", where, str, "") or "\n".join(_str_list(row, "test_imports", where, []))
    prefix = setup.strip() + "\n" if setup.strip() else ""
    return parse_problem({
        "id": f"mbpp/{task_id}",
        "prompt": f"{text}\nYour code should pass these tests:\n{tests[0]}",
        "kind": "assert",
        "entry_point": _mbpp_entry_point(tests[0], code),
        "public_tests": [{"code": prefix + tests[0]}],
        "private_tests": [{"code": prefix + t} for t in tests + challenge],
    }, where)


# --- CodeContests (deepmind/code_contests) ---


def _cc_tests(row: dict, name: str, where: str, default=_REQUIRED) -> list[dict]:
    value = _get(row, name, where, dict, default)
    inputs, outputs = value.get("input") or [], value.get("output") or []
    if not (isinstance(inputs, list) and isinstance(outputs, list) and len(inputs) == len(outputs)
            and all(isinstance(s, str) for s in inputs + outputs)):
        raise ProblemError(f"{where}: field {name}: needs lists of strings input and output of equal length")
    return [{"input": i, "output": o} for i, o in zip(inputs, outputs, strict=True)]


def convert_codecontests(row: dict, where: str) -> Problem:
    """Private tests are ``private_tests``, else ``generated_tests``, else (both empty) ``public_tests``."""
    name = _get(row, "name", where, str)
    public = _cc_tests(row, "public_tests", where)
    private = _cc_tests(row, "private_tests", where, {}) or _cc_tests(row, "generated_tests", where, {}) or public
    if not private:
        raise ProblemError(f"{where}: field private_tests: no tests in private_tests, generated_tests or public_tests")
    limit = _get(row, "time_limit", where, dict, {})
    seconds = (limit.get("seconds") or 0) + (limit.get("nanos") or 0) / 1e9
    memory = _get(row, "memory_limit_bytes", where, int, 0) // 2**20
    return parse_problem({
        "id": f"codecontests/{name}",
        "prompt": _get(row, "description", where, str),
        "kind": "stdin_stdout",
        "public_tests": public,
        "private_tests": private,
        "time_limit_s": min(seconds, 600.0) if seconds > 0 else 10.0,
        "memory_mb": min(max(memory, 16), 65536) if memory > 0 else 1024,
    }, where)


# --- APPS (codeparrot/apps) ---


def _apps_text(value, where: str) -> str:
    """A stdin test's input or output: a string, or a list of lines."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    if not isinstance(value, str):
        raise ProblemError(f"{where}: field input_output: a stdin test needs strings, got {value!r:.60}")
    return value


def convert_apps(row: dict, where: str) -> Problem:
    problem_id = _get(row, "problem_id", where, (int, str))
    spec = _json_field(row, "input_output", where, dict)
    inputs, outputs = spec.get("inputs"), spec.get("outputs")
    if not (isinstance(inputs, list) and isinstance(outputs, list) and inputs and len(inputs) == len(outputs)):
        raise ProblemError(f"{where}: field input_output: needs non-empty lists inputs and outputs of equal length")
    starter = _get(row, "starter_code", where, str, "") or None
    fn_name = spec.get("fn_name")
    if fn_name:
        if not isinstance(fn_name, str) or not all(isinstance(args, list) for args in inputs):
            raise ProblemError(f"{where}: field input_output: fn_name must be a string and each input a list of args")
        tests = [{"code": _call_test(_callee(starter, fn_name), args, out, lenient=True)}
                 for args, out in zip(inputs, outputs, strict=True)]
    else:
        tests = [{"input": _apps_text(i, where), "output": _apps_text(o, where)}
                 for i, o in zip(inputs, outputs, strict=True)]
    return parse_problem({
        "id": f"apps/{problem_id}",
        "prompt": _get(row, "question", where, str),
        "kind": "assert" if fn_name else "stdin_stdout",
        "entry_point": fn_name or None,
        "starter_code": starter,
        "public_tests": tests[:1],
        "private_tests": tests,
    }, where)


# --- LiveCodeBench (livecodebench/code_generation_lite) ---


class _StringOnlyUnpickler(pickle.Unpickler):
    """Loads only plain data: any reference to a class or function (the way a pickle runs code) fails."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a test-case pickle holds only a string")


def decode_lcb_tests(text: str) -> list:
    """LCB test cases: a JSON list, or base64(zlib(pickle(json string))) decoded without running code."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    payload = _StringOnlyUnpickler(io.BytesIO(zlib.decompress(base64.b64decode(text, validate=True)))).load()
    if not isinstance(payload, str):
        raise ValueError(f"the decompressed pickle holds a {type(payload).__name__}, not a JSON string")
    return json.loads(payload)


def _lcb_tests(row: dict, name: str, where: str) -> list[dict]:
    text = _get(row, name, where, str)
    try:
        tests = decode_lcb_tests(text)
    except Exception as e:  # bad base64, zlib, pickle or JSON
        raise ProblemError(f"{where}: field {name}: cannot decode: {type(e).__name__}: {e}") from None
    if not isinstance(tests, list) or not all(
        isinstance(t, dict) and isinstance(t.get("input"), str) and isinstance(t.get("output"), str) for t in tests
    ):
        raise ProblemError(f"{where}: field {name}: expected a list of {{input, output, testtype}} objects")
    return tests


def _lcb_call_test(test: dict, callee: str, where: str) -> dict:
    """A functional test: its input is one JSON value per line (the positional args), its output JSON."""
    try:
        args = [json.loads(line) for line in test["input"].split("\n") if line.strip()]
        expected = json.loads(test["output"])
    except json.JSONDecodeError as e:
        raise ProblemError(f"{where}: field public_test_cases/private_test_cases: "
                           f"a functional test is not JSON: {e.msg}") from None
    return {"code": _call_test(callee, args, expected)}


def convert_livecodebench(row: dict, where: str) -> Problem:
    """Private tests are ``private_test_cases``, or the public ones when that list is empty."""
    question_id = _get(row, "question_id", where, (str, int))
    public = _lcb_tests(row, "public_test_cases", where)
    private = _lcb_tests(row, "private_test_cases", where) or public
    starter = _get(row, "starter_code", where, str, "") or None
    types = {t.get("testtype") for t in public + private}
    entry_point = None
    if types == {"functional"}:
        entry_point = _json_field(row, "metadata", where, dict).get("func_name")
        if not isinstance(entry_point, str):
            raise ProblemError(f"{where}: field metadata: a functional problem needs a string func_name")
        callee = _callee(starter, entry_point)
        public = [_lcb_call_test(t, callee, where) for t in public]
        private = [_lcb_call_test(t, callee, where) for t in private]
    elif types == {"stdin"}:
        public = [{"input": t["input"], "output": t["output"]} for t in public]
        private = [{"input": t["input"], "output": t["output"]} for t in private]
    else:
        raise ProblemError(f"{where}: field public_test_cases: testtype must be all 'stdin' or all "
                           f"'functional', got {sorted(map(str, types))}")
    return parse_problem({
        "id": f"lcb/{question_id}",
        "prompt": _get(row, "question_content", where, str),
        "kind": "stdin_stdout" if types == {"stdin"} else "assert",
        "entry_point": entry_point,
        "starter_code": starter,
        "public_tests": public,
        "private_tests": private,
    }, where)


# name -> (converter, the row's id key, the hub split to load). MBPP loads its 500-problem test
# split (the benchmark everyone reports), CodeContests and APPS their training splits, LCB its only split.
ADAPTERS: dict[str, tuple[Converter, str, str]] = {
    "mbpp": (convert_mbpp, "task_id", "test"),
    "codecontests": (convert_codecontests, "name", "train"),
    "apps": (convert_apps, "problem_id", "train"),
    "livecodebench": (convert_livecodebench, "question_id", "test"),
}

HUB_NAMES: dict[str, str] = {
    "google-research-datasets/mbpp": "mbpp",
    "mbpp": "mbpp",
    "deepmind/code_contests": "codecontests",
    "codeparrot/apps": "apps",
    "livecodebench/code_generation_lite": "livecodebench",
}
