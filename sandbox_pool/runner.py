"""Runners: execute one run request (one test of one candidate) in isolation, return its raw result.

A request is ``{"mode": "assert"|"stdio", "code", "test"|"input", "time_s", "memory_mb",
"output_bytes"}``; a result is the fork server's answer: ``{"returncode", "timed_out", "report",
"stdout", "stderr", "wall_s"}``, or ``{"infra_error": reason}`` when the sandbox itself failed.

Backends:
- ``forkserver`` (default as root): one long-lived bwrap per server, a forked child per run, each
  slot its own uid; supervised: a dead or stuck server is restarted and its runs are retried.
- ``bwrap``: one unprivileged bwrap per run (no root needed; slower).
- ``unsafe_local``: no isolation at all, only rlimits. For machines without bubblewrap, on explicit
  request; it lacks namespaces (network, filesystem, pids) and a separate uid.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal

from proctor.sandbox_pool.bwrap import (
    FORKSERVER_PY,
    SANDBOX_PYTHON,
    UID_BASE,
    SandboxUnavailable,
    UidRange,
    become_subreaper,
    bwrap_argv,
    can_switch_uid,
    check_available,
    reap_orphans,
    tracked_spawn,
    untrack,
)

log = logging.getLogger(__name__)
Backend = Literal["auto", "forkserver", "bwrap", "unsafe_local"]
MAX_TRIES = 3


class ServerDied(RuntimeError):
    pass


def _code_dir() -> str:
    """A world-readable dir holding only forkserver.py, mounted read-only at /sandbox."""
    d = tempfile.mkdtemp(prefix="proctor-code-")
    os.chmod(d, 0o755)
    target = os.path.join(d, "forkserver.py")
    with open(target, "w") as f:
        f.write(FORKSERVER_PY.read_text())
    os.chmod(target, 0o444)
    return d


class ForkServer:
    """One long-lived sandbox serving runs through a forked child each."""

    def __init__(self, slots: int = 2, tmpfs_mb: int = 512, start_timeout_s: float = 30.0):
        if not can_switch_uid():
            raise SandboxUnavailable("the fork server gives each run its own uid and needs root; "
                                     "use sandbox.backend=bwrap (one unprivileged sandbox per run)")
        check_available()
        become_subreaper()
        self.slots, self.tmpfs_mb, self.start_timeout_s = slots, tmpfs_mb, start_timeout_s
        self.uids = UidRange.acquire()
        self.code_dir = _code_dir()
        self.starts = 0
        self._rid = itertools.count()
        self._lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._proc: subprocess.Popen | None = None
        self.death_reason = ""
        self.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and not self._dead

    def start(self) -> None:
        argv = [*bwrap_argv(self.code_dir, self.tmpfs_mb, privileged=True), "--",
                SANDBOX_PYTHON, "-I", "/sandbox/forkserver.py", str(self.uids.base), str(self.slots)]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        with tracked_spawn() as track:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self._stderr, start_new_session=True)
            track(self._proc.pid)
        self._dead = False
        self.starts += 1
        ready = self._read_line(self.start_timeout_s)
        if not ready or not json.loads(ready).get("ready"):
            self.kill()
            raise SandboxUnavailable(f"the fork server did not start: {self._stderr_tail()}")
        threading.Thread(target=self._reader, args=(self._proc,), daemon=True, name="forkserver-reader").start()

    def _read_line(self, timeout: float) -> bytes:
        box: list[bytes] = []
        t = threading.Thread(target=lambda: box.append(self._proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        return box[0] if box else b""

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-2000:].decode(errors="replace").strip()

    def _reader(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            msg = json.loads(line)
            with self._lock:
                fut = self._pending.pop(msg.pop("rid"), None)
            if fut is not None:
                fut.set_result(msg)
        self._fail_pending(proc)

    def _fail_pending(self, proc: subprocess.Popen) -> None:
        with self._lock:
            if proc is not self._proc:
                return
            self._dead = True
            pending, self._pending = self._pending, {}
        self.death_reason = f"fork server (pid {proc.pid}) died: {self._stderr_tail()[-300:] or 'no message'}"
        err = ServerDied(self.death_reason)
        for fut in pending.values():
            fut.set_exception(err)

    def submit(self, req: dict) -> Future:
        fut: Future = Future()
        with self._lock:
            if self._dead or self._proc is None:
                raise ServerDied("fork server is not running")
            rid = next(self._rid)
            self._pending[rid] = fut
            try:
                self._proc.stdin.write((json.dumps({**req, "rid": rid}) + "\n").encode())
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError) as e:
                self._pending.pop(rid, None)
                raise ServerDied(f"fork server is gone: {e}") from e
        return fut

    def kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()
        untrack(proc.pid)
        self._fail_pending(proc)

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        self._proc = None
        self.uids.release()


def run_once(req: dict, *, isolated: bool = True, tmpfs_mb: int = 64) -> dict:
    """One run in a fresh sandbox of its own (``isolated=False``: a bare subprocess, rlimits only)."""
    code_dir = _code_dir()
    try:
        argv = [SANDBOX_PYTHON, "-I", "/sandbox/forkserver.py", "-", "1", "--once"]
        env = None
        if isolated:
            check_available()
            become_subreaper()
            argv = [*bwrap_argv(code_dir, tmpfs_mb, privileged=False), "--", *argv]
        else:
            argv[2] = os.path.join(code_dir, "forkserver.py")
            run_root = tempfile.mkdtemp(prefix="proctor-unsafe-")
            if can_switch_uid():
                os.chown(run_root, UID_BASE, UID_BASE)
            env = {"PATH": "/usr/bin:/bin", "PROCTOR_RUN_ROOT": run_root}
        as_uid = {"user": UID_BASE, "group": UID_BASE, "extra_groups": []} if can_switch_uid() else {}
        with tracked_spawn() as track:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True, env=env, **as_uid)
            track(proc.pid)
        try:
            out, err = proc.communicate(json.dumps({**req, "rid": 0}).encode() + b"\n", timeout=req["time_s"] + 10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            return {"infra_error": "the per-run sandbox did not answer in time"}
        finally:
            untrack(proc.pid)
        msg = json.loads(out.splitlines()[-1]) if out.strip() else {}
        if "rid" not in msg:
            return {"infra_error": f"the per-run sandbox failed: {err.decode(errors='replace')[-500:]}"}
        msg.pop("rid")
        return msg
    finally:
        shutil.rmtree(code_dir, ignore_errors=True)
        if not isolated:
            shutil.rmtree(env["PROCTOR_RUN_ROOT"], ignore_errors=True)


class Sandbox:
    """Runs requests on a backend with retries; a run the sandbox could not complete after
    ``MAX_TRIES`` comes back as ``{"infra_error": ...}``, never as a pass or a fail."""

    def __init__(self, backend: Backend = "auto", slots: int = 2, servers: int = 1):
        if backend == "auto":
            backend = "forkserver" if can_switch_uid() else "bwrap"
        if backend == "unsafe_local":
            log.warning("sandbox.backend=unsafe_local: untrusted code runs WITHOUT namespaces, a separate "
                        "uid or a filesystem view of its own; only rlimits apply")
        self.backend = backend
        self.slots = slots * servers
        self.servers = [ForkServer(slots) for _ in range(servers)] if backend == "forkserver" else []
        self._next = itertools.count()
        self._restart_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(2, self.slots * 2), thread_name_prefix="sandbox")
        self.restarts = 0

    def submit(self, req: dict) -> Future:
        return self._pool.submit(self.run, req)

    def run(self, req: dict) -> dict:
        if self.backend != "forkserver":
            return run_once(req, isolated=self.backend == "bwrap")
        server = self.servers[next(self._next) % len(self.servers)]
        reason = ""
        for _ in range(MAX_TRIES):
            try:
                if not server.alive():
                    self._restart(server)
                return server.submit(req).result(timeout=req["time_s"] + 15)
            except (ServerDied, TimeoutError, SandboxUnavailable) as e:
                reason = f"{type(e).__name__}: {str(e)[-300:]}"
                self._restart(server)
        return {"infra_error": f"sandbox failed {MAX_TRIES} times: {reason}"}

    def _restart(self, server: ForkServer) -> None:
        with self._restart_lock:
            if not server.alive():
                log.warning("restarting the sandbox fork server: %s", server.death_reason)
                server.restart()
                self.restarts += 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for s in self.servers:
            s.close()
        reap_orphans()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
