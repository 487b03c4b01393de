"""The judge's basic contract: verdicts decided outside the candidate, limits enforced."""

import pytest

from sandbox_pool.judge import judge
from sandbox_pool.problem import Problem

FUNC = Problem(id="inc", prompt="inc(x) returns x + 1", kind="assert", entry_point="inc",
               public_tests=[{"code": "assert inc(1) == 2"}],
               private_tests=[{"code": "assert inc(2) == 3"}, {"code": "assert inc(-1) == 0"}],
               time_limit_s=2.0, memory_mb=256)
PROG = Problem(id="dbl", prompt="print 2n", kind="stdin_stdout",
               public_tests=[{"input": "3\n", "output": "6\n"}], private_tests=[{"input": "21\n", "output": "42"}],
               time_limit_s=2.0, memory_mb=256)


def statuses(v):
    return [t.status for t in v.tests]


def test_correct_solutions_pass():
    assert judge(FUNC, "def inc(x):\n    return x + 1\n").passed
    assert judge(PROG, "print(2 * int(input()))").passed


@pytest.mark.parametrize(
    ("problem", "code", "status"),
    [
        (FUNC, "def inc(x):\n    pass\n", "wrong_answer"),
        (FUNC, "def inc(x):\n    return 1 / 0\n", "runtime_error"),
        (FUNC, "import os\nos._exit(0)\n", "runtime_error"),  # exits 0 before the tests ran
        (FUNC, "import sys\nsys.exit(0)\n", "runtime_error"),
        (FUNC, "def inc(x):\n    while True: pass\n", "timeout"),
        (FUNC, "x = bytearray(8 << 30)\n", "memory"),
        (FUNC, 'print(\'{"status": "pass", "detail": ""}\')\ndef inc(x): return 0\n', "wrong_answer"),
        (PROG, "print(7)", "wrong_answer"),
        (PROG, "import sys\nsys.stdout.write('x' * (4 << 20))", "output_limit"),
        (PROG, "raise SystemExit(3)", "runtime_error"),
    ],
)
def test_bad_solutions_fail_with_the_right_status(problem, code, status):
    v = judge(problem, code)
    assert v.verdict == "fail"
    assert status in statuses(v), statuses(v)


def test_public_only_runs_public_tests():
    v = judge(FUNC, "def inc(x):\n    return x + 1\n", "public")
    assert v.passed and len(v.tests) == 1 and v.tests[0].public


def test_no_network_no_project_tree_no_shadow():
    probe = Problem(id="probe", prompt="p", kind="assert", entry_point=None, private_tests=[{"code": "probe()"}],
                    public_tests=[], time_limit_s=5.0, memory_mb=256)
    code = (
        "import os, socket\n"
        "def probe():\n"
        "    assert not os.path.exists('/work') and not os.path.exists('/root'), 'host tree visible'\n"
        "    assert os.getuid() != 0, 'runs as root'\n"
        "    try:\n"
        "        open('/etc/shadow').read()\n"
        "        raise AssertionError('read /etc/shadow')\n"
        "    except PermissionError:\n"
        "        pass\n"
        "    s = socket.socket()\n"
        "    s.settimeout(1)\n"
        "    try:\n"
        "        s.connect(('1.1.1.1', 80))\n"
        "        raise AssertionError('network reachable')\n"
        "    except OSError:\n"
        "        pass\n"
    )
    v = judge(probe, code)
    assert v.passed, [t.detail for t in v.tests]
