"""The judge's contract: verdicts decided outside the candidate, limits enforced, nothing escapes."""

import socket
import subprocess
import threading

import pytest

from proctor.problems.format import Problem
from proctor.sandbox_pool.adversarial import ADVERSARIAL, FUNC, PROG
from proctor.sandbox_pool.bwrap import UID_BASE
from proctor.sandbox_pool.judge import judge
from proctor.sandbox_pool.runner import Sandbox


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
