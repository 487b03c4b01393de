"""Bubblewrap command lines, process reaping and uid ranges for the sandbox runners.

Isolation of every run: pid/net/ipc/uts/cgroup namespaces (no network), only /usr and /etc visible
read-only, a private size-limited tmpfs, a cleared environment, uids distinct from the supervisor's,
rlimits (CPU, address space, processes, file size, open files, core) set by the run itself, and a
wall-clock kill. Runs are reaped: the supervisor is a child subreaper.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import threading
from importlib import resources
from pathlib import Path

SANDBOX_PYTHON = "/usr/bin/python3"
# Sandbox uids start here, never the supervisor's. A fork server takes a range of its own (one uid per
# slot, so a run's kill(-1) reaches no other run) and holds a lock file on it while it lives.
UID_BASE = int(os.environ.get("PROCTOR_SANDBOX_UID", "61337"))
UID_RANGE = 64
PR_SET_CHILD_SUBREAPER = 36
# The fork server runs inside the sandbox under the system Python: its source is copied in, never imported.
FORKSERVER_PY = resources.files("proctor.sandbox_pool") / "forkserver.py"


class SandboxUnavailable(RuntimeError):
    """Isolation cannot be set up on this machine; nothing untrusted was run."""


def check_available() -> None:
    if shutil.which("bwrap") is None:
        raise SandboxUnavailable("bubblewrap is not installed (apt-get install bubblewrap), "
                                 "or set sandbox.backend=unsafe_local to run without isolation")
    if not Path(SANDBOX_PYTHON).is_file():
        raise SandboxUnavailable(f"the sandbox interpreter {SANDBOX_PYTHON} is missing (apt-get install python3)")


def bwrap_argv(code_dir: str, tmpfs_mb: int, *, privileged: bool) -> list[str]:
    """``privileged``: bwrap started as root with no user namespace and only the capabilities a
    fork server needs to give each run its own uid; otherwise an unprivileged user namespace."""
    if privileged:
        argv = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--cap-drop", "ALL",
                "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL",
                # to hand each run a private dir owned by its uid, and to read and clear it after
                "--cap-add", "CAP_CHOWN", "--cap-add", "CAP_DAC_OVERRIDE", "--cap-add", "CAP_FOWNER"]
    else:
        argv = ["bwrap", "--unshare-all"]
    argv += ["--die-with-parent", "--new-session", "--clearenv",
             "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for d in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(tmpfs_mb << 20), "--tmpfs", "/tmp",
             "--ro-bind", code_dir, "/sandbox", "--chdir", "/tmp",
             "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
             "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--setenv", "PYTHONHASHSEED", "0"]
    return argv


def can_switch_uid() -> bool:
    return os.geteuid() == 0


# --- reaping ---------------------------------------------------------------------------------

_lock = threading.Lock()
_live: set[int] = set()  # pids of our own Popen children (subprocess waits for those, not us)
_subreaper = False


def become_subreaper() -> None:
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


@contextlib.contextmanager
def tracked_spawn():
    """Hold while creating a Popen child, then ``track(proc.pid)``; untrack when it was waited for."""
    with _lock:
        yield _live.add


def untrack(pid: int) -> None:
    with _lock:
        _live.discard(pid)
    reap_orphans()


def reap_orphans() -> None:
    """Reap exited children that are not ours to wait for (adopted orphans)."""
    with _lock:
        for children in Path("/proc/self/task").glob("*/children"):
            try:
                pids = [int(p) for p in children.read_text().split()]
            except OSError:
                continue
            for pid in pids:
                if pid not in _live:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)


# --- uid ranges ------------------------------------------------------------------------------


class UidRange:
    """A range of sandbox uids held exclusively (flock) by one fork server on this machine."""

    def __init__(self, base: int, fd: int):
        self.base, self._fd = base, fd

    @classmethod
    def acquire(cls, lock_dir: str = "/tmp/proctor-uids") -> UidRange:
        os.makedirs(lock_dir, exist_ok=True)
        for i in range(1, 1000):
            base = UID_BASE + i * UID_RANGE
            fd = os.open(f"{lock_dir}/{base}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return cls(base, fd)
        raise SandboxUnavailable("no free sandbox uid range (1000 fork servers on this machine?)")

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
