"""docker-compose.yml: a Ray head and workers from the repo's Dockerfile, checked by docker-compose itself."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose_config(directory: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose not installed: scripts/setup.sh installs it (apt-get install docker-compose)")
    return subprocess.run([exe, "config"], cwd=directory, capture_output=True, text=True, timeout=60)


def test_compose_file_is_valid_and_keeps_ray_on_loopback():
    out = compose_config(ROOT)
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    head, worker = cfg["services"]["ray-head"], cfg["services"]["ray-worker"]
    assert head["image"] == worker["image"] and head["build"]["context"] == str(ROOT)
    assert (ROOT / "Dockerfile").exists()
    assert all(str(p).startswith("127.0.0.1:") for p in head["ports"]), head["ports"]
    assert "--head" in head["command"] and "--address=ray-head:6379" in worker["command"]
    assert worker["deploy"]["replicas"] >= 1


def test_compose_rejects_a_broken_file(tmp_path):
    text = (ROOT / "docker-compose.yml").read_text().replace("    command:", "    comand:", 1)
    (tmp_path / "docker-compose.yml").write_text(text)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    out = compose_config(tmp_path)
    assert out.returncode != 0 and "comand" in out.stderr


def test_dockerfile_installs_the_wheel_and_the_context_holds_the_package():
    """The image installs the wheel a build stage makes from the whole context (no source directory
    copied by name); .dockerignore must not drop a file the wheel is built from."""
    import fnmatch
    import re
    import tomllib

    docker = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM \S+ AS wheel$", docker, re.M) and "pip wheel" in docker
    assert re.search(r"^COPY --from=wheel /wheels ", docker, re.M)
    assert "scripts/install.sh" in docker, "the image must install with the checkout's set-up script"
    copies = [line for line in docker.splitlines() if line.startswith("COPY ") and "--from" not in line]
    assert copies == ["COPY . .", "COPY scripts/install.sh scripts/torch_source.py /opt/proctor/scripts/"], copies
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert {".venv", "runs", "reports", ".git"} <= set(ignored)
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = [*tool["tool"]["setuptools"]["package-dir"].values(), "pyproject.toml", "README.md", "LICENSE"]
    dropped = [n for n in needed for pat in ignored if fnmatch.fnmatch(n, pat.removeprefix("**/"))]
    assert dropped == [], f".dockerignore drops what the wheel is built from: {dropped}"


@pytest.mark.slow
def test_compose_up_runs_the_documented_job_on_a_head_and_two_workers(tmp_path):
    """The compose file started for real: a head and two workers from the built image, the documented
    `ray job submit` of the tiny config with its learner rank and engine spread over the nodes, its
    metrics on the host under ./runs, then everything torn down. Needs a Docker daemon and the image
    (`docker-compose build`; docs/cluster.md says how it was built here): skipped without them."""
    import json
    import os
    import sys
    import time

    def run(*cmd, timeout=300) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    docker = shutil.which("docker")
    if docker is None or run(docker, "info", timeout=30).returncode:
        pytest.skip("no Docker daemon answers here")
    if run(docker, "image", "inspect", "proctor:cpu", timeout=30).returncode:
        pytest.skip("the image proctor:cpu is not built (docker-compose build)")
    project, out = f"proctor-test-{os.getpid()}", f"compose-test-{os.getpid()}"
    compose = [shutil.which("docker-compose"), "-p", project]
    ray = [str(Path(sys.executable).parent / "ray")]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    try:
        up = run(*compose, "up", "-d", "--no-build", "--scale", "ray-worker=2")
        assert up.returncode == 0, up.stderr[-3000:]
        deadline = time.time() + 180
        while True:
            nodes = subprocess.run([*ray, "list", "nodes", "--address", "http://127.0.0.1:8265", "--format", "json",
                                    "--filter", "state=ALIVE"], capture_output=True, text=True, env=env, timeout=60)
            if nodes.returncode == 0 and len(json.loads(nodes.stdout)) == 3:
                break
            assert time.time() < deadline, nodes.stderr[-2000:] + run(*compose, "logs").stdout[-3000:]
            time.sleep(3)
        job = subprocess.run([*ray, "job", "submit", "--address", "http://127.0.0.1:8265", "--working-dir", str(tmp_path),
                              "--", "proctor", "train", "--config", "tiny", "--out", f"runs/{out}", "run.iterations=1",
                              "run.placement=spread", "run.learner_cpus=1", "run.engine_cpus=1"],
                             capture_output=True, text=True, env=env, timeout=900)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-2000:]
        run_dir = ROOT / "runs" / out
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in rows] == [1] and rows[0]["episodes"] > 0
        placed = json.loads((run_dir / "placement.json").read_text())
        assert len(set(placed["learner"] + placed["engines"])) == 2  # spread over two nodes
        assert json.loads((run_dir / "checkpoint" / "driver.json").read_text())["iterations_done"] == 1
    finally:
        run(*compose, "down", "-v", "--remove-orphans")
        shutil.rmtree(ROOT / "runs" / out, ignore_errors=True)
    assert run(docker, "ps", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout.strip() == ""
