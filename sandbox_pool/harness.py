# Runs inside the sandbox (Debian's python3, isolated mode): executes the candidate solution, then
# one assert test, and reports on stdout behind a per-run nonce read from stdin before any candidate
# code runs. Exiting early, crashing or printing a forged report gives no nonce line, so no pass.
import json
import os
import sys
import traceback

_nonce = sys.stdin.readline().strip()
_write = os.write


def _report(status, detail=""):
    _write(1, ("\n" + _nonce + json.dumps({"status": status, "detail": detail[-2000:]}) + "\n").encode())


def _trimmed_traceback():
    # Keep only frames of the candidate and the test, not of this harness.
    etype, value, tb = sys.exc_info()
    frames = [f for f in traceback.extract_tb(tb) if f.filename in ("solution.py", "test.py")]
    return "".join(traceback.format_list(frames) + traceback.format_exception_only(etype, value))


def _main():
    with open("/sandbox/solution.py") as f:
        solution = f.read()
    with open("/sandbox/test.py") as f:
        test = f.read()
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(solution, "solution.py", "exec"), namespace)
        exec(compile(test, "test.py", "exec"), namespace)
    except AssertionError:
        return _report("wrong_answer", _trimmed_traceback())
    except MemoryError:
        return _report("memory", "MemoryError")
    except RecursionError:
        return _report("runtime_error", _trimmed_traceback())
    except BaseException:  # SystemExit and KeyboardInterrupt included: a test must run to its end
        return _report("runtime_error", _trimmed_traceback())
    _report("pass")


_main()
