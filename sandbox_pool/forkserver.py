# The fork server: runs inside one long-lived bubblewrap sandbox under Debian's python3, as uid 0
# of no user namespace but with only CAP_SETUID, CAP_SETGID and CAP_KILL. It reads run requests
# (JSON lines on stdin), forks one child per run, and answers on stdout. Each child drops to the
# uid of its slot (never the server's), limits itself, and runs the candidate in the already warm
# interpreter. Only the standard library; no candidate code ever runs in this process.
import ast

# Warm imports every child inherits for free.
import bisect  # noqa: F401
import collections  # noqa: F401
import functools  # noqa: F401
import heapq  # noqa: F401
import itertools  # noqa: F401
import json
import math  # noqa: F401
import os
import random  # noqa: F401
import re  # noqa: F401
import resource
import secrets
import selectors
import signal
import string  # noqa: F401
import sys
import time
import traceback
import typing  # noqa: F401

RUN_ROOT = os.environ.get("PROCTOR_RUN_ROOT", "/tmp/runs")
# argv: BASE_UID SLOTS [--once]. BASE_UID "-" = no uid switch (an unprivileged sandbox: one bwrap per
# run gives the isolation instead). --once: serve one request, then exit.
SWITCH_UID = sys.argv[1] != "-"
BASE_UID = int(sys.argv[1]) if SWITCH_UID else os.getuid()
SLOTS = int(sys.argv[2])
ONCE = "--once" in sys.argv[3:]


# ----------------------------------------------------------------------------------------------
# Child side: everything below `_child` runs in the forked child, after the privilege drop.


# Builtins the harness needs after candidate code has run are bound here, at import, so that a
# candidate patching the builtins module (builtins.exec = ..., builtins.type = ...) cannot reach them.
_exec, _compile, _type, _all = exec, compile, type, all
_AssertionError, _MemoryError, _BaseException = AssertionError, MemoryError, BaseException


def _plain(value, depth=0, type=_type, all=_all):
    if depth > 50:
        return False
    if value is None or type(value) in (bool, int, float, complex, str, bytes):
        return True
    if type(value) in (list, tuple, set, frozenset):
        return all(_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _strict_eq(left, right, type=_type):
    # An operand of a user-defined type must not decide equality by itself: compare only values
    # of plain built-in types (numbers compare across int/float/bool as Python does).
    if not (_plain(left) and _plain(right)) and type(left) is not type(right):
        return False
    return left == right


class _AssertRewriter(ast.NodeTransformer):
    def visit_Assert(self, node):
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Eq, ast.NotEq)):
            call = ast.Call(func=ast.Name("__proctor_eq__", ast.Load()), args=[test.left, test.comparators[0]],
                            keywords=[])
            node.test = call if isinstance(test.ops[0], ast.Eq) else ast.UnaryOp(ast.Not(), call)
        return self.generic_visit(node)


def _compile_test(source):
    """The test, asserts rewritten, as the body of ``__proctor_test__(__proctor_eq__)``.

    Inside a function the helper is a parameter (a closure cell for nested defs such as HumanEval's
    ``check``), not a global the candidate could rebind. A test that cannot live in a function
    (``from m import *``) runs at module level with the helper in its globals.
    """
    body = _AssertRewriter().visit(ast.parse(source, "test.py")).body or [ast.Pass()]
    params = ast.arguments(posonlyargs=[], args=[ast.arg("__proctor_eq__")], kwonlyargs=[], kw_defaults=[],
                           defaults=[])
    wrapped = ast.Module(body=[ast.FunctionDef("__proctor_test__", params, body, [], None)], type_ignores=[])
    try:
        return compile(ast.fix_missing_locations(wrapped), "test.py", "exec"), True
    except SyntaxError:
        return compile(ast.fix_missing_locations(ast.Module(body=body, type_ignores=[])), "test.py", "exec"), False


def _lock_down():
    """Close the doors a candidate could use to skip or forge the test from inside."""
    import threading

    def refused(*_a, **_k):
        raise RuntimeError("tracing and profiling hooks are disabled in the sandbox")

    sys.settrace = sys.setprofile = refused
    threading.settrace = threading.setprofile = refused
    for name in ("ctypes", "_ctypes", "cffi", "_testcapi", "_testinternalcapi"):
        sys.modules[name] = None  # import fails


def _trimmed_traceback():
    etype, value, tb = sys.exc_info()
    frames = [f for f in traceback.extract_tb(tb) if f.filename in ("solution.py", "test.py", "<solution>")]
    return "".join(traceback.format_list(frames) + traceback.format_exception_only(etype, value))


def _reporter(fd, nonce):
    # The report channel's secret lives only in this closure (the candidate never gets it through
    # argv, environment, files or stdin); a report without it is ignored by the server.
    write = os.write

    def report(status, detail=""):
        write(fd, nonce + b"\0" + status.encode() + b"\0" + detail[-2000:].encode("utf-8", "replace"))

    return report


def _child(req, uid, run_dir, report_w, nonce):
    report = _reporter(report_w, nonce)
    del nonce
    try:
        os.setsid()
        if SWITCH_UID:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)  # drops every capability
        mem = req["memory_mb"] << 20
        cpu = int(req["time_s"]) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_NPROC, (32, 32))
        resource.setrlimit(resource.RLIMIT_FSIZE, (req["output_bytes"], req["output_bytes"]))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.chdir(run_dir)
        fds = [os.open("stdin", os.O_RDONLY),
               os.open("stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
               os.open("stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)]
        for dst, src in enumerate(fds):
            os.dup2(src, dst)
            os.close(src)
        os.closerange(3, report_w)
        os.closerange(report_w + 1, 1 << 16)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        test_code = _compile_test(req["test"]) if req["mode"] == "assert" else None
    except BaseException as e:  # before any candidate code: the sandbox's fault, not the candidate's
        report("infra_error", f"child setup failed: {type(e).__name__}: {e}")
        os._exit(71)

    if req["mode"] == "stdio":
        _lock_down()
        try:
            exec(compile(req["code"], "solution.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
            rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            sys.stderr.write(_trimmed_traceback())
            rc = 1
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                rc = rc or 1
        os._exit(rc)

    test_code, as_function = test_code
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    if not as_function:
        namespace["__proctor_eq__"] = _strict_eq
    _lock_down()
    try:
        _exec(_compile(req["code"], "solution.py", "exec"), namespace)
        _exec(test_code, namespace)
        if as_function:
            namespace.pop("__proctor_test__")(_strict_eq)
        status, detail = "pass", ""
    except _AssertionError:
        status, detail = "wrong_answer", _trimmed_traceback()
    except _MemoryError:
        status, detail = "memory", "MemoryError"
    except _BaseException:  # SystemExit included: the test must run to its end
        status, detail = "runtime_error", _trimmed_traceback()
    try:
        sys.stdout.flush()
    except _BaseException:
        pass
    report(status, detail)
    os._exit(0)


# ----------------------------------------------------------------------------------------------
# Server side.


def _send(obj):
    sys.__stdout__.write(json.dumps(obj) + "\n")
    sys.__stdout__.flush()


def _read_capped(path, cap):
    try:
        with open(path, "rb") as f:
            return f.read(cap).decode("utf-8", "replace")
    except OSError:
        return ""


def _sweep(uid):
    """Kill every process of a slot's uid: a child that setsid()s or forks cannot escape."""
    if not SWITCH_UID:
        return  # one run per sandbox: its pid namespace dies with it
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)  # all processes this uid may signal, except this one
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


class Run:
    def __init__(self, req, slot):
        self.req, self.slot = req, slot
        self.uid = BASE_UID + slot
        self.dir = f"{RUN_ROOT}/{slot}"
        self.nonce = secrets.token_hex(16).encode()
        self.report = b""
        self.watching = True
        self.timed_out = False
        self.start = time.monotonic()
        self.deadline = self.start + req["time_s"] + 0.5
        self.pid = self.report_r = self.pidfd = -1  # set once forked


def _clean_dir(path):
    for root, dirs, files in os.walk(path, topdown=False):
        for f in files:
            os.unlink(os.path.join(root, f))
        for d in dirs:
            p = os.path.join(root, d)
            if os.path.islink(p):
                os.unlink(p)
            else:
                os.rmdir(p)


def main():
    os.makedirs(RUN_ROOT, exist_ok=True)
    sel = selectors.DefaultSelector()
    stdin = sys.stdin.buffer.raw
    os.set_blocking(stdin.fileno(), False)
    sel.register(stdin.fileno(), selectors.EVENT_READ, ("stdin", None))
    pending, free, runs, buf = [], list(range(SLOTS)), {}, b""
    _send({"ready": True, "pid": os.getpid(), "slots": SLOTS})

    def launch(req, slot):
        run = Run(req, slot)
        if os.path.isdir(run.dir):
            _clean_dir(run.dir)
        else:
            os.mkdir(run.dir)
        with open(f"{run.dir}/stdin", "w") as f:
            f.write(req.get("input", ""))
        if SWITCH_UID:
            os.chown(run.dir, run.uid, run.uid)
            os.chown(f"{run.dir}/stdin", run.uid, run.uid)
        os.chmod(run.dir, 0o700)
        report_r, report_w = os.pipe()
        sys.__stdout__.flush()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(report_r)
                _child(req, run.uid, run.dir, report_w, run.nonce)
            finally:
                os._exit(70)
        os.close(report_w)
        os.set_blocking(report_r, False)  # a stray grandchild may hold the write end open
        run.pid, run.report_r = pid, report_r
        run.pidfd = os.pidfd_open(pid)
        sel.register(report_r, selectors.EVENT_READ, ("report", run))
        sel.register(run.pidfd, selectors.EVENT_READ, ("exit", run))
        runs[pid] = run

    def finish(run):
        if run.watching:
            sel.unregister(run.report_r)
        sel.unregister(run.pidfd)
        _, status = os.waitpid(run.pid, 0)
        _sweep(run.uid)  # before reading on: strays of the run die first
        try:
            while chunk := os.read(run.report_r, 65536):
                run.report += chunk
        except OSError:  # nothing more buffered (BlockingIOError) or the pipe is gone
            pass
        for fd in (run.report_r, run.pidfd):
            os.close(fd)
        rc = os.waitstatus_to_exitcode(status)
        report = None
        # The candidate may write to the channel too; only a message with the nonce counts.
        for msg in run.report.split(run.nonce + b"\0")[1:]:
            st, _, detail = msg.partition(b"\0")
            report = {"status": st.decode("utf-8", "replace"), "detail": detail.decode("utf-8", "replace")}
        cap = run.req["output_bytes"]
        _send({"rid": run.req["rid"], "returncode": rc, "timed_out": run.timed_out, "report": report,
               "stdout": _read_capped(f"{run.dir}/stdout", cap), "stderr": _read_capped(f"{run.dir}/stderr", cap),
               "wall_s": time.monotonic() - run.start})
        _clean_dir(run.dir)
        del runs[run.pid]
        free.append(run.slot)

    while True:
        while pending and free:
            launch(pending.pop(0), free.pop(0))
        now = time.monotonic()
        timeout = min((r.deadline for r in runs.values()), default=now + 3600) - now
        for key, _ in sel.select(max(timeout, 0)):
            kind, run = key.data
            if kind == "stdin":
                chunk = stdin.read(1 << 20)
                if chunk == b"":  # supervisor gone
                    for r in list(runs.values()):
                        _sweep(r.uid)
                    return
                buf += chunk or b""
                *lines, buf = buf.split(b"\n")
                pending.extend(json.loads(line) for line in lines if line.strip())
                if ONCE and pending:
                    sel.unregister(key.fd)
            elif kind == "report":
                if runs.get(run.pid) is not run or not run.watching:
                    continue  # finished earlier in this same batch of events: its fds are closed (maybe reused)
                try:
                    chunk = os.read(run.report_r, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                run.report += chunk
                if not chunk:  # every writer closed it: stop watching, the exit event follows
                    sel.unregister(run.report_r)
                    run.watching = False
            elif kind == "exit" and runs.get(run.pid) is run:
                finish(run)
                if ONCE:
                    return
        now = time.monotonic()
        for run in list(runs.values()):
            if now > run.deadline and not run.timed_out:
                run.timed_out = True
                os.kill(run.pid, signal.SIGKILL)
                _sweep(run.uid)


if __name__ == "__main__":
    main()
