"""The wheel as a user gets it: built from the checkout, inspected, installed (--no-deps) into a fresh
venv that reuses this project's installed dependencies, and run from a directory outside the checkout."""

import subprocess
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
DIST_INFO = f"proctor-{VERSION}.dist-info"


def _run(installed, *cmd) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True,
                          timeout=300)


def test_the_wheel_holds_one_namespace_and_every_data_file(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    outside = [n for n in names if not n.startswith(("proctor/", f"{DIST_INFO}/"))]
    assert outside == [], f"files outside proctor/: {outside}"
    assert zipfile.ZipFile(wheel).read(f"{DIST_INFO}/top_level.txt").decode().split() == ["proctor"]
    assert f"{DIST_INFO}/licenses/LICENSE" in names
    shipped = {n.removeprefix("proctor/") for n in names if n.startswith("proctor/")}
    # every config (ablations too), bundled problem file and module of the checkout is in the wheel
    from proctor.cluster.config import CONFIG_DIR

    want = {f"configs/{p.relative_to(CONFIG_DIR).as_posix()}" for p in CONFIG_DIR.rglob("*.yaml")}
    assert "configs/ablations/single-turn.yaml" in want and "configs/tiny.yaml" in want
    want |= {f"problems/bundled/{p.name}" for p in (ROOT / "problems" / "bundled").glob("*.jsonl")}
    for directory in ("cluster", "rollout", "learner", "reward", "sandbox_pool", "problems", "studies", "bench"):
        want |= {f"{directory}/{p.relative_to(ROOT / directory).as_posix()}" for p in (ROOT / directory).rglob("*.py")}
    assert want - shipped == set(), f"missing from the wheel: {sorted(want - shipped)}"


def test_pip_show_lists_no_top_level_name_but_proctor(installed):
    proc = _run(installed, installed["python"], "-m", "pip", "show", "-f", "proctor")
    assert proc.returncode == 0, proc.stderr
    files = proc.stdout.split("Files:", 1)[1].split()
    tops = {f.split("/")[0] for f in files if not f.startswith("../")}
    assert tops == {"proctor", DIST_INFO}, tops
    assert "proctor/configs/ablations/prm-dense.yaml" in files


def test_the_cli_runs_from_outside_the_checkout(installed):
    proctor = str(installed["bin"] / "proctor")
    proc = _run(installed, proctor, "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"proctor {VERSION}", proc.stdout + proc.stderr

    proc = _run(installed, proctor, "config", "show")
    assert proc.returncode == 0, proc.stderr
    assert "out_dir: runs/local" in proc.stdout and "iterations: 3" in proc.stdout  # configs/local.yaml

    proc = _run(installed, proctor, "config", "show", "--config", "tiny")
    assert proc.returncode == 0, proc.stderr
    assert "out_dir: runs/tiny" in proc.stdout and "iterations: 2" in proc.stdout  # configs/tiny.yaml

    proc = _run(installed, proctor, "data", "inspect", "bundled")
    assert proc.returncode == 0, proc.stderr
    assert "bundled: 118 problems" in proc.stdout

    # a user's own config, based on a shipped one by name, from the directory the user is in
    (installed["cwd"] / "mine.yaml").write_text("base: tiny\nrun:\n  iterations: 7\n")
    proc = _run(installed, proctor, "config", "show", "--config", "mine.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "iterations: 7" in proc.stdout

    proc = _run(installed, proctor, "config", "show", "--config", "tinny")
    assert proc.returncode == 2 and "did you mean 'tiny'" in proc.stdout, proc.stdout


def test_the_installed_code_is_the_wheels_and_old_names_are_gone(installed):
    code = ("import proctor.cluster.config as c, proctor.problems.load as p; "
            "print(c.__file__); print(c.CONFIG_DIR); print(p.BUNDLED_DIR)")
    proc = _run(installed, installed["python"], "-c", code)
    assert proc.returncode == 0, proc.stderr
    site = str(installed["bin"].parent)
    assert all(line.startswith(site) for line in proc.stdout.split()), proc.stdout
    for old in ("cluster", "reward", "bench", "rollout"):
        proc = _run(installed, installed["python"], "-c", f"import {old}")
        assert proc.returncode == 1 and f"ModuleNotFoundError: No module named '{old}'" in proc.stderr, proc.stderr
