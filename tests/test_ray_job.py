"""``proctor train`` as a Ray job: a head started here on 127.0.0.1, ``ray job submit`` of a short run."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head of our own (``--block``: stopping it stops only what it started, not other Ray)."""
    # The venv's bin on PATH, as for a user who activated it before `ray start`: jobs find `proctor` there.
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    env.pop("RAY_ADDRESS", None)
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():  # Ray turns token auth on when this file exists; the CLI must then send it
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token.read_text().strip())
    tmp = Path("/tmp") / f"proctor-rayjob-{os.getpid()}"  # short: Ray's socket paths have a length limit
    shutil.rmtree(tmp, ignore_errors=True)
    dash = free_port()
    address = f"http://127.0.0.1:{dash}"
    # Every port free-picked: another Ray on this machine (the test session's own local cluster) already
    # holds the fixed defaults, e.g. the dashboard agent's 52365, and a second agent there never comes up.
    ports = [f"--{name}={free_port()}" for name in ("port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                   "runtime-env-agent-port", "metrics-export-port",
                                                   "ray-client-server-port")]
    with open(tmp_path / "head.log", "w") as log:
        head = subprocess.Popen([RAY, "start", "--head", "--block", *ports, "--num-cpus=2",
                                 "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={tmp}",
                                 "--include-dashboard=true"], env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.time() + 120
            while subprocess.run([RAY, "job", "list", "--address", address], env=env,
                                 capture_output=True).returncode:
                if head.poll() is not None or time.time() > deadline:
                    pytest.fail(f"ray head did not come up: {(tmp_path / 'head.log').read_text()[-2000:]}")
                time.sleep(2)
            yield address, env
        finally:
            head.terminate()
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                head.kill()
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_train_runs_as_a_ray_job(ray_head, tiny_model_dir, tmp_path):
    """The documented submission, examples/ray_job.sh (`ray job submit ... -- proctor train ...`)."""
    address, env = ray_head
    run = tmp_path / "run"
    args = ["--config", "tiny", "--out", str(run), f"model.name={tiny_model_dir}", "run.iterations=1",
            "run.placement=pack"]
    deadline = time.time() + 120
    while True:  # the head's job agent starts a little after its job API answers
        job = subprocess.run(["bash", str(ROOT / "examples" / "ray_job.sh"), *args], env={**env, "RAY_ADDRESS": address},
                             capture_output=True, text=True, timeout=600)
        if "No available agent" not in job.stderr + job.stdout or time.time() > deadline:
            break
        time.sleep(3)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout.lower()
    assert "placement group (pack): 1 learner + 1 engine bundles reserved" in job.stdout
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1] and rows[0]["episodes"] == 4
    assert (run / "checkpoint" / "driver.json").exists()
