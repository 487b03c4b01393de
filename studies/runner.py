"""How a study runs a stage: ``proctor ARGS`` as a subprocess appending to a log file, so one failed
stage ends neither the study nor the stages already done."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def run_cli(args: list[str], log: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ proctor {' '.join(args)}\n")
        f.flush()
        rc = subprocess.run([sys.executable, "-m", "proctor.cluster.cli", *args], stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - t0


def log_tail(path: Path, n: int = 5) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def add_wall(run_dir: Path, seconds: float, key: str = "train_s") -> dict:
    """Add ``seconds`` to ``RUN_DIR/wall.json[key]`` (a resumed stage's attempts add up); returns the file's dict."""
    path = run_dir / "wall.json"
    wall = json.loads(path.read_text()) if path.exists() else {}
    wall[key] = wall.get(key, 0.0) + seconds
    path.write_text(json.dumps(wall))
    return wall
