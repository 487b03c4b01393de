"""``proctor train`` as a Ray job on a real cluster of two raylets that share no disk.

The head is ``ray start --head`` on 127.0.0.1, started from the project's venv (its bin on PATH, as
docs/cluster.md says), with no CPU to offer: everything that computes lands on the worker. The worker
node is ``ray start --address`` inside bubblewrap, a mount namespace of its own: a private /tmp, home
and /dev/shm, the checkout hidden, the head's run dir and model cache out of sight, the venvs
read-only. It runs proctor as a user's node would, from an installed wheel (a second venv). Checkpoints
and the policy go to S3 (moto's server on 127.0.0.1), which both nodes reach; the model reaches the
worker through the object store. The jobs are submitted with the documented command from the
checkout, ``ray job submit --address ... --working-dir . -- proctor train ...``, and followed with
``ray job logs``.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port

from proctor.learner.storage import Storage

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _token_env() -> dict:
    token = Path.home() / ".ray" / "auth_token"  # Ray turns token auth on when this file exists
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token.read_text().strip()} if token.exists() else {}


class Cluster:
    def __init__(self, tmp: Path, creds: dict, wheel_venv: Path):
        self.tmp, self.creds, self.wheel_venv = tmp, creds, wheel_venv
        self.home = tmp / "head-home"  # the head's (and so the jobs') home: relative run dirs land here
        self.home.mkdir()
        self.temp = Path("/tmp") / f"proctor-rh-{os.getpid()}"  # short: Ray's socket paths have a length limit
        shutil.rmtree(self.temp, ignore_errors=True)
        self.gcs_port, dash = free_port(), free_port()
        self.address = f"http://127.0.0.1:{dash}"
        base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
        # `source .venv/bin/activate; ray start --head`: the jobs find `proctor` on the venv's PATH.
        self.env = {**base, **_token_env(), **creds, "HOME": str(self.home), "PATH": f"{VENV_BIN}:{base.get('PATH', '')}",
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                    "RAY_JOB_STOP_WAIT_TIME_S": "60"}  # time for the SIGTERM path to save (Ray's default: 3 s)
        ports = [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                       "runtime-env-agent-port", "metrics-export-port",
                                                       "ray-client-server-port")]
        with open(tmp / "head.log", "w") as log:  # the child keeps its own copy of the file
            self.head = subprocess.Popen(
                [str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={self.gcs_port}", *ports, "--num-cpus=0",
                 "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={self.temp}",
                 "--include-dashboard=true"],
                env=self.env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        self.worker: subprocess.Popen | None = None
        deadline = time.time() + 120
        while self.ray("job", "list").returncode:
            if self.head.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"ray head did not come up: {(tmp / 'head.log').read_text()[-2000:]}")
            time.sleep(2)

    def ray(self, *args, timeout=120) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "ray"), *args, "--address", self.address], env=self.env,
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT)

    def start_worker(self, hidden: list[Path]) -> None:
        """The worker node in its own mount namespace; it first checks that none of ``hidden`` is there."""
        hosts = self.tmp / "hosts"
        hosts.write_text("127.0.0.1 localhost\n127.0.0.1 ray-head\n")  # the head by name (Ray rewrites a 127.0.0.1)
        keep = [Path(sys.base_prefix), VENV_BIN.parent, self.wheel_venv]  # the interpreter and the venvs, read-only
        bwrap = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--ro-bind", "/", "/",
                 "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm", "--tmpfs", "/tmp", "--tmpfs", str(Path.home()),
                 "--tmpfs", str(ROOT), "--ro-bind", str(hosts), "/etc/hosts"]
        for path in keep:
            bwrap += ["--ro-bind", str(path), str(path)]
        check = " && ".join(f"test ! -e {p}" for p in hidden)
        ports = " ".join(f"--{n}={free_port()}" for n in ("node-manager-port", "object-manager-port",
                                                           "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                           "runtime-env-agent-port", "metrics-export-port"))
        ray = self.wheel_venv / "bin" / "ray"
        node = f"{check} || exit 97; exec {ray} start --address=ray-head:{self.gcs_port} --node-ip-address=127.0.0.1 " \
               f"--num-cpus=4 --block {ports}"
        env = {**_token_env(), **self.creds, "HOME": str(Path.home()), "PATH": f"{self.wheel_venv / 'bin'}:/usr/bin:/bin",
               "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
        with open(self.tmp / "worker.log", "a") as log:
            self.worker = subprocess.Popen([*bwrap, "sh", "-c", node], env=env, stdout=subprocess.DEVNULL, stderr=log,
                                           start_new_session=True)
        deadline = time.time() + 120
        while len(self.nodes()) < 2:
            if self.worker.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"worker node did not join (exit {self.worker.poll()}): "
                                   f"{(self.tmp / 'worker.log').read_text()[-2000:]}")
            time.sleep(2)

    def nodes(self) -> dict[str, bool]:
        """Alive nodes: node id -> is head."""
        out = self.ray("list", "nodes", "--format", "json", "--filter", "state=ALIVE")
        try:  # none alive yet prints "No resource in the cluster", not an empty JSON list
            return {n["node_id"]: n["is_head_node"] for n in json.loads(out.stdout)} if out.returncode == 0 else {}
        except ValueError:
            return {}

    def kill_worker(self) -> None:
        """The worker node lost: its raylet and every process of it, at once."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(timeout=60)

    def submit(self, *args: str) -> subprocess.Popen:
        """docs/cluster.md's command, from the checkout; it streams the job's log until the job ends."""
        return subprocess.Popen([str(VENV_BIN / "ray"), "job", "submit", "--address", self.address, "--working-dir", ".",
                                 "--", "proctor", "train", *args], cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def stop(self) -> None:
        for proc in (self.worker, self.head):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self.temp, ignore_errors=True)


def job_id(proc: subprocess.Popen, lines: list[str]) -> str:
    """Read the submitting command's output up to the line that names the job."""
    for line in proc.stdout:
        lines.append(line)
        if m := re.search(r"Job '(raysubmit_\w+)' submitted successfully", line):
            return m.group(1)
    raise AssertionError("no job id in: " + "".join(lines)[-3000:])


def wait_for_rows(path: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not (path.exists() and len(path.read_text().splitlines()) >= n):
        assert proc.poll() is None and time.time() < deadline, f"no iteration {n} in {path}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_bucket, installed, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("cluster")
    c = Cluster(tmp, s3_bucket[1], installed["venv"])
    try:
        c.start_worker(hidden=[tiny_model_dir, Path(os.environ["PROCTOR_CACHE"]), c.home, ROOT / "cluster"])
        yield c
    finally:
        c.stop()
        logs = [p for p in (tmp / "head.log", tmp / "worker.log") if p.exists()]
        assert not any(proc.poll() is None for proc in (c.head, c.worker) if proc is not None), logs


def _args(tiny_model_dir, storage: str, *extra: str) -> list[str]:
    """``storage`` empty: the config's default (the run dir, on the head's disk)."""
    return ["--config", "tiny", f"model.name={tiny_model_dir}", *([f"run.storage={storage}"] if storage else []),
            "run.placement=pack", "run.learner_cpus=1", "run.engine_cpus=1", *extra]


def test_the_documented_job_stops_with_a_checkpoint_and_resumes_on_a_node_without_the_drivers_disk(
        cluster, tiny_model_dir, s3_bucket):
    storage = s3_bucket[0].format("job")
    run = cluster.home / "runs" / "job"
    # 1. Submitted; stopped with `ray job stop` once iteration 1 is logged (SIGTERM: it saves and ends).
    lines: list[str] = []
    proc = cluster.submit(*_args(tiny_model_dir, storage, "--out", "runs/job", "run.iterations=2",
                                 "run.save_policy=true"))
    job = job_id(proc, lines)
    wait_for_rows(run / "metrics.jsonl", 1, proc)
    stopped = cluster.ray("job", "stop", job, timeout=180)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    proc.communicate(timeout=120)
    status = cluster.ray("job", "status", job).stdout
    assert "was stopped" in status, status
    log = cluster.ray("job", "logs", job).stdout
    assert "model" in log and "put in the object store" in log
    assert "interrupted" in log, log[-3000:]
    placed = json.loads((run / "placement.json").read_text())
    nodes = cluster.nodes()
    assert all(not nodes[n] for n in placed["learner"] + placed["engines"]), (placed, nodes)  # on the worker
    done = json.loads(Storage(storage).read_text("checkpoint/driver.json"))["iterations_done"]
    assert done >= 1
    assert not (run / "checkpoint").exists()  # checkpoints go to run.storage, not the driver's disk
    # 2. Resumed with the same command, followed to its end: the iterations after the checkpoint run.
    lines = []
    proc = cluster.submit("--resume", "runs/job")
    job = job_id(proc, lines)
    follow = cluster.ray("job", "logs", "--follow", job, timeout=600).stdout
    lines.append(proc.communicate(timeout=120)[0])
    assert proc.returncode == 0, "".join(lines)[-3000:]
    assert f"resumed from {Storage(storage).child('checkpoint')} after iteration {done}" in follow, follow[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2] and all(r["episodes"] == 4 for r in rows)
    state = json.loads(Storage(storage).read_text("checkpoint/driver.json"))
    assert state["iterations_done"] == 2 and Storage(storage).exists(f"checkpoint/actor/{state['tag']}")
    assert Storage(storage).exists("policy/config.json") and Storage(storage).exists("policy/model.safetensors")


def test_a_run_dir_the_worker_cannot_see_is_refused_before_the_first_rollout(cluster, tiny_model_dir):
    proc = cluster.submit(*_args(tiny_model_dir, "", "--out", "runs/local-storage"))
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0
    assert "does not see run.storage=" in out and "runs/local-storage" in out, out[-3000:]
    metrics = cluster.home / "runs" / "local-storage" / "metrics.jsonl"
    assert not metrics.exists() or not metrics.read_text()


def test_a_run_the_cluster_cannot_hold_fails_within_the_placement_timeout_naming_it(cluster, tiny_model_dir, s3_bucket):
    t = time.monotonic()
    proc = cluster.submit(*_args(tiny_model_dir, s3_bucket[0].format("big"), "--out", "runs/big", "run.learner_cpus=64",
                                 "run.placement_timeout_s=5"))
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0
    assert "placement group (pack) not placed within 5 s" in out and "'CPU': 64" in out, out[-3000:]
    assert time.monotonic() - t < 240  # loose: a busy machine starts slowly


def test_the_worker_node_lost_mid_run_stops_it_with_the_resume_command(cluster, tiny_model_dir, s3_bucket):
    """Runs last: the worker node is killed (raylet and all), and the head has no room for what ran there."""
    storage = s3_bucket[0].format("lost")
    run = cluster.home / "runs" / "lost"
    lines: list[str] = []
    proc = cluster.submit(*_args(tiny_model_dir, storage, "--out", "runs/lost", "run.iterations=3",
                                 "run.placement_timeout_s=20"))
    job_id(proc, lines)
    deadline = time.time() + 300  # lost during iteration 2, with iteration 1's checkpoint in S3
    while not Storage(storage).exists("checkpoint/driver.json"):
        assert proc.poll() is None and time.time() < deadline, "".join(lines)[-3000:]
        time.sleep(0.5)
    cluster.kill_worker()
    out = "".join(lines) + proc.communicate(timeout=400)[0]
    assert proc.returncode != 0
    assert "proctor train --resume" in out and "runs/lost" in out, out[-3000:]
    done = json.loads(Storage(storage).read_text("checkpoint/driver.json"))["iterations_done"]
    rows = [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert done >= 1 and rows[:done] == list(range(1, done + 1))  # nothing of a finished iteration lost


def test_a_head_that_does_not_answer_fails_within_the_timeout_naming_it(tiny_model_dir, tmp_path):
    port = free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t = time.monotonic()
    proc = subprocess.run([str(VENV_BIN / "proctor"), "train", "--config", "tiny", "--out", str(tmp_path / "run"),
                           f"model.name={tiny_model_dir}", f"run.ray_address=127.0.0.1:{port}",
                           "run.placement_timeout_s=5"], capture_output=True, text=True, timeout=300, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert f"run.ray_address=127.0.0.1:{port}: no Ray head answered there within 5 s" in out, out[-3000:]
    assert time.monotonic() - t < 240  # not Ray's own minutes of retries (bound loose for a busy machine)
