"""``proctor study``: the ablations of ``configs/ablations/`` trained one after another under a time
budget, each evaluated on HumanEval (pass@1 and 1@3) against the untrained model; a markdown report
with a table and PNG curves (``study_report.py``).

    proctor study start [--budget-min 80] [--arms a,b] ...    # in the background; log in OUT/study.log
    proctor study run ...                                     # the same in the foreground
    proctor study report [--out runs/study/report]              # redraw the report from what has finished

Each arm is ``proctor train --config RECIPE`` (``--recipe``, default ``configs/local.yaml``) with the
arm's switch (what ``configs/ablations/ARM.yaml`` changes against ``configs/local.yaml``, as overrides)
and the study's common overrides (the same for every arm, so each arm still differs from the baseline
by exactly its switch), then ``proctor eval`` of its final policy under the same recipe; both run as subprocesses, so one failed arm does not end the
study. Every finished stage is appended to ``OUT/results.jsonl`` at once: a rerun skips the arms
already done, and an arm is only started while the budget has room for it (estimated from the arms
so far). Run dirs (metrics, policy) go to ``RUNS/ARM``; the DeepSpeed checkpoints are deleted after
the arm is evaluated (GBs each) unless ``--keep-checkpoints``.

Stages resume as ``proctor learn``'s do: an evaluation whose ``metrics.json`` exists is not rerun (so
``RUNS/base`` copied from another run of the same recipe on the same machine is reused), an arm killed
mid-training resumes from its last checkpoint (``run.checkpoint_every`` of the recipe), and a run dir
whose training finished is kept; a run dir trained under another config than the arm's is an error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from proctor.cluster.config import (
    CONFIG_DIR,
    LOCAL_CONFIG,
    ConfigError,
    config_changes,
    dump_config,
    load_config,
    shipped_name,
)
from proctor.studies.runner import add_wall, log_tail, run_cli
from proctor.studies.study_report import latest, read_rows, write_report

ARMS = ["multi-turn", "single-turn", "feedback-none", "prm-dense-critic", "feedback-random", "prm-dense",
        "outcome-critic"]
PRM_ARMS = {"prm-dense", "prm-dense-critic"}
# The same for every arm: no in-training eval (the study evaluates), the final policy saved.
COMMON = ["run.eval_problems=0", "run.save_policy=true"]
# On configs/local.yaml only: its lr warm-up (50 steps) would keep a short run at ~0 lr.
LOCAL_SHORT = ["learner.lr=1e-6", "learner.warmup_steps=0"]



def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _eval_args(a, model: str, out: Path) -> list[str]:
    limit = ["--limit", str(a.eval_limit)] if a.eval_limit else []
    return ["eval", "--config", str(a.recipe), "--model", model, "--dataset", a.eval_dataset, "--turns",
            str(a.eval_turns), *limit, "--skip", str(a.eval_skip), "--out", str(out), *a.overrides]


def arm_switch(arm: str) -> list[str]:
    """What the arm changes, as overrides: what ``configs/ablations/ARM.yaml`` states against local.yaml."""
    return [o for o in config_changes(CONFIG_DIR / "ablations" / f"{arm}.yaml", LOCAL_CONFIG)
            if not o.startswith("run.out_dir=")]


def shared_overrides(a) -> list[str]:
    """The same for every arm: the common ones, the short-run lr on local.yaml, the study's own."""
    short = LOCAL_SHORT if shipped_name(a.recipe) == "local" else []
    return [*COMMON, *short, f"run.iterations={a.iterations}", *a.overrides]


def arm_overrides(a, arm: str) -> list[str]:
    """The overrides that make ``a.recipe`` into the arm: its switch, the shared ones, the PRM to use."""
    prm = [f"reward.prm_model={a.prm_model}"] if arm in PRM_ARMS and a.prm_model else []
    return [*arm_switch(arm), *shared_overrides(a), *prm]


def foreign_run_dir(a, arm: str) -> str | None:
    """The error when ``RUNS/ARM`` holds a run trained under another config than the arm's (its results
    would be another arm's), else None."""
    saved = Path(a.runs) / arm / "config.yaml"
    overrides = arm_overrides(a, arm)
    if saved.exists() and saved.read_text() != dump_config(load_config(a.recipe, overrides)):
        return (f"{saved}: this run dir was trained under another config than arm {arm}'s (proctor train "
                f"--config {a.recipe} {' '.join(overrides)}); move it away or use another --runs")
    return None


def arm_stage(run_dir: Path) -> str:
    """Where an arm's run dir stands: ``trained`` (its policy saved), ``training, resumed`` (a checkpoint of
    a killed run) or ``training`` (nothing usable there: whatever is there is removed)."""
    if (run_dir / "policy" / "config.json").exists():
        return "trained"
    if (run_dir / "checkpoint" / "driver.json").exists():
        return "training, resumed"
    shutil.rmtree(run_dir, ignore_errors=True)  # killed before its first checkpoint: start over
    return "training"


def run_study(a, console: Console) -> int:
    out, runs = Path(a.out), Path(a.runs)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = {arm for arm, r in latest(read_rows(results)).items() if r["status"] == "done"}
    arms = [x for x in a.arms if x not in done]
    console.print(f"[bold]proctor study[/]: arms {', '.join(a.arms)} ({len(done)} done before), "
                  f"{a.iterations} iterations each, budget {a.budget_min:g} min -> {out}")
    t0, spent = time.time(), []
    if "base" not in done:
        log = runs / "base" / "log.txt"
        log.parent.mkdir(parents=True, exist_ok=True)
        metrics = runs / "base" / "eval" / "metrics.json"
        reused = metrics.exists()
        console.print(f"base: {'reusing the evaluation in ' + str(metrics.parent) if reused else 'evaluating the untrained model'}")
        rc, dt = (0, 0.0) if reused else run_cli(_eval_args(a, a.model, runs / "base" / "eval"), log)
        wall = add_wall(runs / "base", dt, key="eval_s")  # a reused evaluation's own time, where it was kept
        _append(results, {"arm": "base", "status": "done" if rc == 0 else "failed", "eval_s": round(wall["eval_s"], 1),
                          **({"reused": True} if reused else {}),
                          "eval": json.loads(metrics.read_text()) if rc == 0 else None,
                          **({} if rc == 0 else {"error": log_tail(log)})})
    for i, arm in enumerate(arms, 1):
        elapsed = time.time() - t0
        estimate = sum(spent) / len(spent) if spent else 0.0
        if elapsed + estimate > a.budget_min * 60:
            console.print(f"[yellow]{arm}: skipped[/] ({elapsed / 60:.0f} of {a.budget_min:g} min used, "
                          f"an arm takes ~{estimate / 60:.0f} min)")
            _append(results, {"arm": arm, "status": "skipped",
                              "reason": f"time budget: {elapsed / 60:.0f} of {a.budget_min:g} min used, "
                                        f"an arm takes ~{estimate / 60:.0f} min"})
            continue
        run_dir, overrides = runs / arm, arm_overrides(a, arm)
        if error := foreign_run_dir(a, arm):
            _append(results, {"arm": arm, "status": "failed", "stage": "train", "error": error})
            console.print(f"[red]{arm}:[/] {error}")
            continue
        stage = arm_stage(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / "log.txt"
        console.print(f"arm {i}/{len(arms)} {arm}: {stage} ({run_dir}, log {log})")
        argv = {"training": ["train", "--config", str(a.recipe), "--out", str(run_dir), *overrides],
                "training, resumed": ["train", "--resume", str(run_dir)]}.get(stage)
        rc, t_train = run_cli(argv, log) if argv else (0, 0.0)
        wall = add_wall(run_dir, t_train)  # a resumed or reused run's whole training time
        row = {"arm": arm, "recipe": str(a.recipe), "switch": arm_switch(arm), "shared": shared_overrides(a),
               "iterations": a.iterations, "overrides": overrides, "train_s": round(wall["train_s"], 1),
               **({"reused": True} if stage == "trained" else {})}
        if rc != 0:
            spent.append(t_train)
            _append(results, {**row, "status": "failed", "stage": "train", "error": log_tail(log)})
            console.print(f"[red]{arm}: training failed[/] (exit {rc}); see {log}")
            continue
        console.print(f"arm {i}/{len(arms)} {arm}: evaluating its policy")
        rc, t_eval = (0, 0.0) if (run_dir / "eval" / "metrics.json").exists() else \
            run_cli(_eval_args(a, str(run_dir / "policy"), run_dir / "eval"), log)
        wall = add_wall(run_dir, t_eval, key="eval_s")
        if t_train + t_eval:  # what ran here estimates the next arm; a reused arm does not
            spent.append(t_train + t_eval)
        if rc != 0:
            _append(results, {**row, "status": "failed", "stage": "eval", "error": log_tail(log)})
            console.print(f"[red]{arm}: evaluation failed[/] (exit {rc}); see {log}")
            continue
        if not a.keep_checkpoints:
            shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
        _append(results, {**row, "status": "done", "eval_s": round(wall["eval_s"], 1),
                          "summary": json.loads((run_dir / "summary.json").read_text()),
                          "eval": json.loads((run_dir / "eval" / "metrics.json").read_text())})
        console.print(f"{arm}: done in {(wall['train_s'] + wall['eval_s']) / 60:.1f} min")
        write_report(out, runs)
    path = write_report(out, runs)
    console.print(f"report: {path}")
    return 0


# --- command line -------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/study/report", help="results.jsonl, report.md, PNGs")
    p.add_argument("--runs", default="runs/study", help="one run dir per arm (metrics, policy, logs)")
    p.add_argument("--arms", type=lambda s: s.split(","), default=ARMS, help=f"comma-separated (default {','.join(ARMS)})")
    p.add_argument("--recipe", default="local",
                   help="the config every arm starts from: a YAML file or a shipped config's name (e.g. learn-cpu); an arm adds its switch")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--budget-min", type=float, default=80.0, help="no arm is started that would not fit")
    p.add_argument("--model", default=None, help="the untrained model (default: the recipe's model.name)")
    p.add_argument("--eval-dataset", default="humaneval")
    p.add_argument("--eval-limit", type=int, default=40, help="0 = every problem")
    p.add_argument("--eval-skip", type=int, default=64,
                   help="HumanEval problems left out first (0-63: the training eval slice and the PRM's labels)")
    p.add_argument("--eval-turns", type=int, default=3)
    p.add_argument("--prm-model", default=None, help="reward.prm_model for the PRM arms (default: the config's)")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="for every arm and every eval")


def check(a) -> str | None:
    """A bad argument as one message, before anything starts (None when all is well)."""
    unknown = [x for x in a.arms if not (CONFIG_DIR / "ablations" / f"{x}.yaml").exists()]
    if unknown:
        return f"unknown arm(s) {', '.join(unknown)}: arms are the files of {CONFIG_DIR / 'ablations'} ({', '.join(ARMS)})"
    try:
        cfg = load_config(a.recipe, a.overrides)  # a bad recipe or override fails here, naming the key
    except ConfigError as e:
        return str(e)
    a.model = a.model or cfg.model.name
    for arm in a.arms:  # each arm's config is whole and valid before any arm starts
        try:
            load_config(a.recipe, arm_overrides(a, arm))
        except ConfigError as e:
            return f"arm {arm} on {a.recipe}: {e}"
    for arm in a.arms:
        if error := foreign_run_dir(a, arm):
            return error
    if PRM_ARMS & set(a.arms):
        prm = Path(a.prm_model or load_config(CONFIG_DIR / "ablations" / "prm-dense.yaml").reward.prm_model)
        if not (prm / "value_head.safetensors").exists():
            return (f"the PRM arms need a trained PRM at {prm} (proctor prm label; proctor prm train), "
                    "or --prm-model DIR, or leave them out with --arms")
    return None


def to_argv(a) -> list[str]:
    """The ``proctor study run`` arguments that parse back into ``a``."""
    return ["--out", a.out, "--runs", a.runs, "--arms", ",".join(a.arms), "--recipe", str(a.recipe),
            "--iterations", str(a.iterations),
            "--budget-min", str(a.budget_min), "--eval-dataset", a.eval_dataset, "--eval-limit", str(a.eval_limit),
            "--eval-skip", str(a.eval_skip), "--eval-turns", str(a.eval_turns),
            *(["--model", a.model] if a.model else []), *(["--prm-model", a.prm_model] if a.prm_model else []),
            *(["--keep-checkpoints"] if a.keep_checkpoints else []), *a.overrides]


def start_background(a) -> tuple[int, Path]:
    """``proctor study run`` with the arguments ``a`` as a detached process; returns its pid and log."""
    out, argv = Path(a.out), to_argv(a)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "study.log"
    with open(log, "a") as f:
        proc = subprocess.Popen([sys.executable, "-m", "proctor.cluster.cli", "study", "run", *argv], stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    (out / "study.pid").write_text(f"{proc.pid}\n")
    return proc.pid, log
