"""Run one untrusted Python program inside a bubblewrap sandbox.

Isolation (see the Sandbox section of the design notes): all namespaces unshared (no network, own
pids), only /usr and /etc visible read-only, a private size-limited tmpfs as the working dir,
a cleared environment, an unprivileged uid different from the supervisor's, rlimits on CPU,
address space, processes, file size, open files and core dumps, and a wall-clock timeout that
kills bwrap (its pid namespace dies with it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# A uid of its own for untrusted code, never the supervisor's (RLIMIT_NPROC counts per uid, so
# sharing it with other software would share the process budget too).
SANDBOX_UID = int(os.environ.get("PROCTOR_SANDBOX_UID", "61337"))
SANDBOX_PYTHON = "/usr/bin/python3"
PR_SET_CHILD_SUBREAPER = 36


class SandboxUnavailable(RuntimeError):
    """Isolation cannot be set up on this machine; nothing untrusted was run."""


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    output_limited: bool
    wall_s: float


@dataclass(frozen=True)
class Limits:
    time_s: float = 10.0
    memory_mb: int = 1024
    output_bytes: int = 1 << 20
    tmpfs_mb: int = 64
    nproc: int = 64
    nofile: int = 64


_lock = threading.Lock()
_live: set[int] = set()  # pids of our own Popen children (reaped by subprocess, not by us)
_subreaper = False


def _become_subreaper() -> None:
    """Orphans of a run (unprivileged bwrap leaves some) are re-parented to us, not to pid 1.

    Without this they stay zombies wherever pid 1 does not reap, each counting against the
    sandbox uid's RLIMIT_NPROC, until bwrap fails with "Creating new namespace failed".
    """
    global _subreaper
    if not _subreaper:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise SandboxUnavailable(f"prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}")
        _subreaper = True


def _reap_orphans() -> None:
    """Reap exited children that are not ours to wait for (adopted orphans)."""
    with _lock:
        for children in Path("/proc/self/task").glob("*/children"):
            try:
                pids = [int(p) for p in children.read_text().split()]
            except OSError:
                continue
            for pid in pids:
                if pid in _live:
                    continue
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)


def check_available() -> None:
    if shutil.which("bwrap") is None:
        raise SandboxUnavailable("bubblewrap is not installed (apt-get install bubblewrap)")
    if not Path(SANDBOX_PYTHON).is_file():
        raise SandboxUnavailable(f"the sandbox interpreter {SANDBOX_PYTHON} is missing")


def _bwrap_argv(workdir: str, limits: Limits) -> list[str]:
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
            "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for d in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/tmp",
             "--ro-bind", workdir, "/sandbox", "--chdir", "/tmp",
             "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
             "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--setenv", "PYTHONHASHSEED", "0"]
    return argv


def _limit_self(limits: Limits):
    cpu = int(limits.time_s) + 1
    mem = limits.memory_mb << 20

    def apply():
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_python(files: dict[str, str], main: str, stdin: str = "", limits: Limits = Limits()) -> ExecResult:
    """Run ``python3 -I /sandbox/<main>`` with ``files`` mounted read-only at /sandbox.

    stdout and stderr go to files capped by RLIMIT_FSIZE (the program is killed by SIGXFSZ past it).
    """
    check_available()
    _become_subreaper()
    with tempfile.TemporaryDirectory(prefix="proctor-sbx-") as host:
        os.chmod(host, 0o755)
        code_dir = Path(host, "code")
        code_dir.mkdir(mode=0o755)
        for name, text in files.items():
            p = code_dir / name
            p.write_text(text)
            p.chmod(0o444)
        argv = [*_bwrap_argv(str(code_dir), limits), "--", SANDBOX_PYTHON, "-I", f"/sandbox/{main}"]
        as_nobody = {"user": SANDBOX_UID, "group": SANDBOX_UID, "extra_groups": []} if os.geteuid() == 0 else {}
        with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
            t0 = time.perf_counter()
            try:
                with _lock:
                    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out_f, stderr=err_f,
                                            start_new_session=True, preexec_fn=_limit_self(limits), **as_nobody)
                    _live.add(proc.pid)
            except OSError as e:
                raise SandboxUnavailable(f"could not start bwrap: {e}") from e
            timed_out = False
            try:
                proc.communicate(input=stdin.encode(), timeout=limits.time_s + 1.0)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill(proc)
            except BrokenPipeError:  # the program exited without reading its stdin
                proc.wait()
            wall = time.perf_counter() - t0
            with _lock:
                _live.discard(proc.pid)
            _reap_orphans()
            stdout = _read_capped(out_f, limits.output_bytes)
            stderr = _read_capped(err_f, limits.output_bytes)
    rc = proc.returncode
    limited = rc in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ)
    if rc == 1 and "bwrap:" in stderr[:200] and not stdout:
        raise SandboxUnavailable(f"bubblewrap could not set up the sandbox: {stderr.strip()[:300]}")
    return ExecResult(rc, stdout, stderr, timed_out, limited, wall)


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap; its pid namespace (the program) dies with it
    proc.wait()


def _read_capped(f, cap: int) -> str:
    f.seek(0)
    return f.read(cap).decode(errors="replace")
