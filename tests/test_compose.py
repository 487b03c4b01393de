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
