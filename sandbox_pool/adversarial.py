"""The sandbox's threat suite: known ways a candidate tries to fake a pass, escape, or take the
machine down, each with the statuses it must end in. Used by the sandbox tests and by
``proctor bench soak``."""

from proctor.problems.format import Problem

FUNC = Problem(id="inc", prompt="inc(x) returns x + 1", kind="assert", entry_point="inc",
               public_tests=[{"code": "assert inc(1) == 2"}],
               private_tests=[{"code": "assert inc(2) == 3"}, {"code": "assert inc(-1) == 0"}],
               time_limit_s=2.0, memory_mb=256)
MULTI = Problem(id="inc2", prompt="inc(x) returns x + 1", kind="assert", entry_point="inc",
                public_tests=[{"code": "assert inc(1) == 2\nassert inc(2) == 3"}],
                private_tests=[{"code": "def check(f):\n    assert f(1) == 2\n    assert f(5) == 6\ncheck(inc)"}],
                time_limit_s=2.0, memory_mb=256)
PROG = Problem(id="dbl", prompt="print 2n", kind="stdin_stdout",
               public_tests=[{"input": "3\n", "output": "6\n"}], private_tests=[{"input": "21\n", "output": "42"}],
               time_limit_s=2.0, memory_mb=256)


ADVERSARIAL = [
    # (name, problem, code, statuses any of which is expected)
    ("wrong answer", FUNC, "def inc(x):\n    pass\n", {"wrong_answer"}),
    ("exception", FUNC, "def inc(x):\n    return 1 / 0\n", {"runtime_error"}),
    ("os._exit(0) before the tests", FUNC, "import os\nos._exit(0)\n", {"runtime_error"}),
    ("sys.exit(0) before the tests", FUNC, "import sys\nsys.exit(0)\n", {"runtime_error"}),
    ("exit inside the function", FUNC, "def inc(x):\n    raise SystemExit(0)\n", {"runtime_error"}),
    ("forged success output", FUNC,
     'print(\'{"status": "pass"}\\nPASSED\\nAll tests passed\')\ndef inc(x): return 0\n', {"wrong_answer"}),
    ("forged report on every fd", FUNC,
     "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'0' * 32 + b'\\0pass\\0')\n"
     "    except OSError:\n        pass\ndef inc(x): return 0\n", {"wrong_answer"}),
    ("__eq__ that always agrees", FUNC,
     "class Any:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
     "def inc(x):\n    return Any()\n", {"wrong_answer"}),
    ("patched AssertionError", FUNC,
     "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\ndef inc(x): return 0\n",
     {"wrong_answer"}),
    ("patched builtins.exec", FUNC,
     "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.type = lambda x: int\ndef inc(x): return 0\n",
     {"wrong_answer"}),
    ("rebinds the equality helper", MULTI,  # right once, then rebinds the helper and lies
     "calls = []\ndef inc(x):\n    calls.append(x)\n    globals()['__proctor_eq__'] = lambda a, b: True\n"
     "    return x + 1 if len(calls) == 1 else 0\n", {"wrong_answer"}),
    ("settrace that skips the assert", FUNC,
     "import sys\ndef inc(x):\n    def t(frame, ev, arg):\n        return t\n    sys.settrace(t)\n    return 0\n",
     {"runtime_error", "wrong_answer"}),
    ("ctypes", FUNC, "import ctypes\ndef inc(x): return x + 1\n", {"runtime_error"}),
    ("infinite loop", FUNC, "def inc(x):\n    while True:\n        pass\n", {"timeout"}),
    ("sleep past the wall limit", FUNC, "import time\ndef inc(x):\n    time.sleep(60)\n", {"timeout"}),
    ("10 GB allocation", FUNC, "x = bytearray(10 * 1024 ** 3)\ndef inc(x): return x + 1\n", {"memory"}),
    ("1 GB file", FUNC, "with open('big', 'wb') as f:\n    f.write(b'x' * (1 << 30))\n",
     {"memory", "output_limit", "runtime_error"}),
    ("huge output", PROG, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", {"output_limit"}),
    ("fork bomb", FUNC, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
     {"timeout", "runtime_error", "memory"}),
    ("kill the parent", FUNC, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\ndef inc(x): return 0\n",
     {"runtime_error", "wrong_answer"}),
    ("kill(-1)", FUNC, "import os, signal\nos.kill(-1, signal.SIGKILL)\n", {"runtime_error"}),
    ("daemon that outlives the run", FUNC,
     "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n    os._exit(0)\ndef inc(x): return 0\n",
     {"wrong_answer"}),
    ("thread left running", FUNC,
     "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=False).start()\n"
     "def inc(x): return 0\n", {"wrong_answer", "timeout"}),
    ("read /etc/shadow", FUNC, "open('/etc/shadow').read()\n", {"runtime_error"}),
    ("write outside its dir", FUNC, "open('/usr/pwned', 'w').write('x')\n", {"runtime_error"}),
    ("write into the harness dir", FUNC, "open('/sandbox/forkserver.py', 'w').write('x')\n", {"runtime_error"}),
    ("deep recursion", FUNC, "import sys\nsys.setrecursionlimit(10**6)\ndef inc(x):\n    return inc(x)\n",
     {"runtime_error", "memory", "timeout"}),  # a busy machine may reach the wall limit first
    ("SystemExit in a stdin program", PROG, "raise SystemExit(3)", {"runtime_error"}),
]
