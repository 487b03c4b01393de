"""The judge's contract: verdicts decided outside the candidate, limits enforced, nothing escapes."""

import socket
import subprocess
import threading

import pytest

from sandbox_pool.bwrap import UID_BASE
from sandbox_pool.judge import judge
from sandbox_pool.problem import Problem
from sandbox_pool.runner import Sandbox

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


def statuses(v):
    return [t.status for t in v.tests]


def test_correct_solutions_pass(sandbox):
    assert judge(sandbox, FUNC, "def inc(x):\n    return x + 1\n").passed
    assert judge(sandbox, PROG, "print(2 * int(input()))").passed
    assert judge(sandbox, PROG, "import sys\nprint(2 * int(sys.stdin.read()))\nsys.exit(0)").passed


def test_public_only_runs_public_tests(sandbox):
    v = judge(sandbox, FUNC, "def inc(x):\n    return x + 1\n", "public")
    assert v.passed and len(v.tests) == 1 and v.tests[0].public


def test_runs_do_not_share_state(sandbox):
    # Each test runs in a fresh child: a global mutated by one test is unchanged in the next.
    p = Problem(id="state", prompt="bump", kind="assert", entry_point="bump",
                public_tests=[{"code": "assert bump() == 1"}], private_tests=[{"code": "assert bump() == 1"}])
    assert judge(sandbox, p, "n = 0\ndef bump():\n    global n\n    n += 1\n    return n\n").passed


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
     {"runtime_error", "memory"}),
    ("SystemExit in a stdin program", PROG, "raise SystemExit(3)", {"runtime_error"}),
]


@pytest.mark.parametrize(("name", "problem", "code", "expected"), ADVERSARIAL, ids=[c[0] for c in ADVERSARIAL])
def test_adversarial_is_contained_and_fails(sandbox, name, problem, code, expected):
    v = judge(sandbox, problem, code)
    assert v.verdict == "fail", (name, statuses(v), [t.detail[-300:] for t in v.tests])
    assert set(statuses(v)) & expected, (name, statuses(v), [t.detail[-300:] for t in v.tests])
    # The sandbox survived: the next run is judged normally.
    assert judge(sandbox, FUNC, "def inc(x):\n    return x + 1\n", "public").passed


def test_network_is_unreachable_even_on_loopback(sandbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    accepted = []
    listener.settimeout(5)
    t = threading.Thread(target=lambda: accepted.append(_accept(listener)), daemon=True)
    t.start()
    code = (f"import socket\ndef inc(x):\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "    return x + 1\n")
    v = judge(sandbox, FUNC, code)
    t.join()
    listener.close()
    assert v.verdict == "fail" and "runtime_error" in statuses(v)
    assert accepted == [None], "the sandbox reached a listener on the host"


def _accept(sock):
    try:
        conn, _ = sock.accept()
        conn.close()
        return "connected"
    except OSError:
        return None


def test_isolation_probe(sandbox):
    probe = Problem(id="probe", prompt="p", kind="assert", entry_point=None, private_tests=[{"code": "probe()"}],
                    public_tests=[], time_limit_s=5.0, memory_mb=256)
    code = (
        "import os\n"
        "def probe():\n"
        "    assert not os.path.exists('/work') and not os.path.exists('/root'), 'host tree visible'\n"
        "    assert os.getuid() != 0 and os.geteuid() != 0, 'runs as root'\n"
        "    assert not os.environ.get('HOME', '').startswith('/root'), os.environ\n"
        "    assert sorted(os.listdir('/')) == ['bin', 'dev', 'etc', 'lib', 'lib64', 'proc', 'sandbox', 'sbin', 'tmp', 'usr'] "
        "or 'work' not in os.listdir('/'), os.listdir('/')\n"
        "    assert len([p for p in os.listdir('/proc') if p.isdigit()]) < 10, 'sees host processes'\n"
    )
    v = judge(sandbox, probe, code)
    assert v.passed, [t.detail for t in v.tests]


def test_no_sandbox_process_survives(sandbox):
    # After the adversarial runs above (daemons, fork bombs, sleeping threads), no process runs as
    # any sandbox uid once the runs are over.
    judge(sandbox, FUNC, "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\ndef inc(x): return 0\n")
    out = subprocess.run(["ps", "-eo", "uid=,pid=,stat=,comm="], capture_output=True, text=True).stdout
    stray = [line for line in out.splitlines() if UID_BASE <= int(line.split()[0]) < UID_BASE + 64 * 1000]
    assert not stray, stray


def test_dead_fork_server_is_restarted_and_the_run_retried():
    with Sandbox("forkserver", slots=2) as sb:
        server = sb.servers[0]
        first = server.pid
        slow = sb.submit({"mode": "assert", "code": "import time\ntime.sleep(1)\ndef inc(x): return x + 1\n",
                          "test": "assert inc(1) == 2", "time_s": 5, "memory_mb": 256, "output_bytes": 1 << 20})
        import time

        time.sleep(0.3)
        server.kill()  # the server dies with the run in flight
        res = slow.result(timeout=30)
        assert res["report"]["status"] == "pass", res
        assert server.pid != first and sb.restarts >= 1
        assert judge(sb, FUNC, "def inc(x):\n    return x + 1\n").passed


def test_unsafe_local_runs_but_is_explicit(caplog):
    with Sandbox("unsafe_local") as sb:
        assert judge(sb, FUNC, "def inc(x):\n    return x + 1\n").passed
        assert not judge(sb, FUNC, "import os\nos._exit(0)\n").passed
    assert "WITHOUT namespaces" in caplog.text


def test_bwrap_per_run_backend_judges_the_same():
    with Sandbox("bwrap") as sb:
        assert judge(sb, FUNC, "def inc(x):\n    return x + 1\n").passed
        assert statuses(judge(sb, FUNC, "def inc(x):\n    pass\n")) == ["wrong_answer"] * 3
        assert judge(sb, PROG, "print(2 * int(input()))").passed
