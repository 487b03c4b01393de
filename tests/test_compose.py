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


def test_dockerfile_copies_every_installed_package():
    """The image installs the repo with pip: a package pyproject.toml includes but the Dockerfile
    leaves out breaks `proctor` (the CLI imports them all) and the image build with it."""
    import re
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in include}
    copied = set(re.findall(r"^COPY (\S+) \1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert packages - copied == set(), f"packages not copied into the image: {sorted(packages - copied)}"
