"""How ``proctor learn`` trains a seed: one ``proctor train`` run, or with ``run.soup`` = K > 1, K runs
whose LoRA adapters are averaged into the seed's policy (``learner.soup``). Each run resumes from its
checkpoint and is skipped once its policy is there."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from proctor.studies.runner import add_wall, log_tail, run_cli


def train_run(run_dir: Path, seed: int, name: str, a, console: Console) -> int:
    """``proctor train`` into ``run_dir`` with ``run.seed=seed``, resumed from its checkpoint if one exists."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "log.txt"
    resume = (run_dir / "checkpoint" / "driver.json").exists()
    console.print(f"{name}: training{' (resumed)' if resume else ''}, log {log}")
    t0 = time.perf_counter()
    argv = (["train", "--resume", str(run_dir)] if resume else
            ["train", "--config", a.config, "--out", str(run_dir), f"run.seed={seed}"])
    rc, _ = run_cli([*argv, *a.overrides], log)
    add_wall(run_dir, time.perf_counter() - t0)  # a failed attempt's time counts too
    if rc != 0:
        console.print(f"[red]{name}: training failed[/] (exit {rc}):\n{log_tail(log)}")
    return rc


def train_seed(run_dir: Path, seed: int, cfg, a, console: Console) -> int:
    """Seed ``seed``'s policy in ``run_dir/policy``: one run, or with ``run.soup`` = K > 1, K runs
    (``member0`` ... with ``run.seed`` = seed * K + j, each skipped once its policy is there) whose
    adapters are averaged (``learner.soup``)."""
    k = cfg.run.soup
    if k == 1:
        return train_run(run_dir, seed, f"seed{seed}", a, console)
    members = [run_dir / f"member{j}" for j in range(k)]
    for j, member in enumerate(members):
        if not (member / "policy" / "config.json").exists() and (
                rc := train_run(member, seed * k + j, f"seed{seed} member {j}", a, console)):
            return rc
    from proctor.cluster.model import resolve
    from proctor.learner.model import resolve_dtype
    from proctor.learner.soup import soup

    t0 = time.perf_counter()
    try:
        soup([m / "policy" / "adapter" for m in members], resolve(cfg.model.name), run_dir / "policy",
             resolve_dtype(cfg.learner.dtype, "cuda" if cfg.run.learner_gpus else "cpu"))
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]seed{seed}: averaging its {k} runs failed[/]: {e}", highlight=False)
        return 2
    add_wall(run_dir, time.perf_counter() - t0)
    console.print(f"seed{seed}: the adapters of its {k} runs averaged into {run_dir / 'policy'}")
    return 0


def train_dirs(run_dir: Path) -> list[Path]:
    """The run dirs that trained a seed's policy: its soup's members, or the seed's dir itself."""
    return sorted(run_dir.glob("member*"), key=lambda p: p.name) or [run_dir]


def train_seconds(run_dir: Path) -> float:
    """A seed's training seconds: its own (or its soup's averaging) plus its members'."""
    walls = [run_dir / "wall.json", *(d / "wall.json" for d in train_dirs(run_dir) if d != run_dir)]
    return sum(json.loads(w.read_text()).get("train_s", 0.0) for w in walls if w.exists())
