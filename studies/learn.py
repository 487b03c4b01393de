"""``proctor learn``: the learning recipe end to end, each trained seed paired against the untrained
model on held-out problems.

    proctor learn [--config learn-cpu] [--seeds 0,1] [--out runs/learn/report] [key=value ...]

Stages, each a subprocess (``proctor eval`` / ``proctor train``) skipped when its output is already
there, so a rerun (after Ctrl-C, a crash, a time limit) goes on where it stopped:
- ``base``: the untrained model on ``data.eval`` (greedy, ``rollout.max_turns`` turns: pass@1 is the
  first attempt on the private tests, 1@T the RLEF rollout) and on the training source's slice that
  training never sees (its first ``data.skip`` problems), both in one ``proctor eval`` (one engine start,
  one batch);
- ``seedS``: ``proctor train`` with ``run.seed=S`` (resumed from its checkpoint if one exists), then
  the same two evaluations of its final policy;
- with ``--rlef-sampling``, each model is also evaluated on ``data.eval`` under RLEF's protocol
  (temperature 0.2, top-p 0.95, one rollout per problem), paired the same way;
- the report: per seed, McNemar's exact test on the paired per-problem outcomes, ``results.json``,
  ``per_problem.jsonl``, ``report.md``, ``training.png`` and ``heldout.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import time
from pathlib import Path

from rich.console import Console

from proctor.cluster.config import CONFIG_DIR, ConfigError, load_config, shipped_name
from proctor.cluster.metrics import read_jsonl
from proctor.studies.runner import add_wall, log_tail, run_cli
from proctor.studies.seed_runs import train_dirs, train_seconds, train_seed
from proctor.studies.stats import all_seeds_exact, outcomes, paired
from proctor.studies.study_report import retries_cell

RECIPE = CONFIG_DIR / "learn-cpu.yaml"
REPORT_OUT = "runs/learn/report"  # a committed report is copied to reports/ by hand, never overwritten by a run


SAMPLED = "eval-t0.2"   # RLEF's protocol: temperature 0.2, top-p 0.95 (one rollout per problem)
SAMPLED_ARGS = ["--temperature", "0.2", "--top-p", "0.95"]
COMMAND = "command.json"  # in --runs: the recipe file and overrides every stage there ran with


def _config_name(config: str | Path | None) -> str:
    """A config as ``--config`` names it: a shipped config's name (``tiny``), else the file's absolute path."""
    return shipped_name(config) or str(Path(config).resolve())


def _record_command(runs: Path, a) -> None:
    """Write what this run's stages train and evaluate with; refuse to mix in a different one."""
    path, now = runs / COMMAND, {"config": _config_name(a.config), "overrides": list(a.overrides)}
    if path.exists():
        before = json.loads(path.read_text())
        before["config"] = shipped_name(before["config"]) or before["config"]
        if before != now:
            raise ConfigError(f"{path}: the stages there ran with config {before['config']} and overrides "
                             f"{before['overrides'] or 'none'}, not {now['config']} with {now['overrides'] or 'none'}: "
                             "pass the same ones to go on, or choose another --runs")
    runs.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(now) + "\n")


def trained_with(runs: Path, seeds: list[int]) -> str | None:
    """The ``proctor learn`` command that produced ``runs`` (None when it predates ``command.json``)."""
    path = runs / COMMAND
    if not path.exists():
        return None
    c = json.loads(path.read_text())
    c["config"] = shipped_name(c["config"]) or c["config"]
    flags = ([f"--config {c['config']}"] if c["config"] != _config_name(RECIPE) else []) + \
        [f"--runs {runs}", f"--seeds {','.join(map(str, seeds))}", *c["overrides"]]
    return " ".join(["proctor learn", *flags])


def _eval(model: str, sets: list[tuple[str, Path, int | None]], a, log: Path, *, extra: list[str] = ()) -> int:
    """One ``proctor eval`` (one engine start) over the ``(dataset, out_dir, limit)`` sets whose
    results are not there yet."""
    todo = [x for x in sets if not (x[1] / "metrics.json").exists()]
    if not todo:
        return 0
    (dataset, out, limit), *rest = todo
    args = ["eval", "--config", a.config, "--model", model, "--dataset", dataset, "--out", str(out), *extra,
            *(["--limit", str(limit)] if limit else [])]
    for d, o, n in rest:
        args += ["--also", d, str(n or 0), str(o)]
    return run_cli([*args, *a.overrides], log)[0]


def run_learn(a, console: Console) -> int:
    cfg = load_config(a.config, a.overrides)
    runs, out = Path(a.runs), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    _record_command(runs, a)
    slice_n = cfg.data.skip
    console.print(f"[bold]proctor learn[/]: {cfg.model.name}, train on {cfg.data.train} (after its first {slice_n}), "
                  f"held out: {cfg.data.eval} and {cfg.data.train}[:{slice_n}]; seeds {a.seeds} -> {out}")
    stages: list[tuple[str, str, Path]] = [("base", cfg.model.name, runs / "base")]
    stages += [(f"seed{s}", str(runs / f"seed{s}" / "policy"), runs / f"seed{s}") for s in a.seeds]
    for (name, model, run_dir), seed in zip(stages, [None, *a.seeds]):
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / "log.txt"
        if seed is not None and not (run_dir / "policy" / "config.json").exists():
            rc = train_seed(run_dir, seed, cfg, a, console)
            if rc != 0:
                return rc
        console.print(f"{name}: evaluating on {cfg.data.eval} and {cfg.data.train}[:{slice_n}]")
        # the recipe's two evaluations share one engine; RLEF's sampled one (another temperature) runs apart
        recipe = [(cfg.data.eval, run_dir / "eval", a.eval_limit),
                  *([(cfg.data.train, run_dir / "eval-train-slice", slice_n)] if slice_n else [])]
        evals = [(recipe, [], "eval_s")]
        if a.rlef_sampling:
            evals.append(([(cfg.data.eval, run_dir / SAMPLED, a.eval_limit)], SAMPLED_ARGS, "eval_sampled_s"))
        for sets, extra, key in evals:
            t0 = time.perf_counter()
            rc = _eval(model, sets, a, log, extra=extra)
            add_wall(run_dir, time.perf_counter() - t0, key=key)  # the recipe's wall counts its own evaluations
            if rc != 0:
                console.print(f"[red]{name}: evaluation on {', '.join(d for d, _, _ in sets)} failed[/] "
                              f"(exit {rc}):\n{log_tail(log)}")
                return rc
        if seed is not None and not a.keep_checkpoints:
            for d in train_dirs(run_dir):
                shutil.rmtree(d / "checkpoint", ignore_errors=True)
        console.print(f"report: {write_report(out, runs, a.seeds)}")
    return 0


# --- report ---------------------------------------------------------------------------------------

def _first_reply(eval_dir: Path, pid: str) -> str:
    for r in read_jsonl(eval_dir / "results.jsonl"):
        if r["id"] == pid and r["episodes"] and r["episodes"][0].get("turns"):
            return r["episodes"][0]["turns"][0].get("reply") or "(no reply text recorded)"
    return "(not found)"


def one_return(code: str | None) -> bool:
    """Whether an attempt's last function is a one-liner: its body, after the docstring, one ``return``.
    The shortcut a length-biased update can collapse the policy to (README, v18); no code: False."""
    try:
        fns = [n for n in ast.parse(code or "").body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    except (SyntaxError, ValueError, RecursionError):
        return False
    body = fns[-1].body[1 if ast.get_docstring(fns[-1]) is not None else 0:] if fns else []
    return len(body) == 1 and isinstance(body[0], ast.Return)


def one_return_answers(eval_dir: Path) -> int:
    """First attempts (first rollout, first turn) that are one-line answers (``one_return``)."""
    return sum(one_return(r["episodes"][0]["turns"][0].get("code"))
               for r in read_jsonl(eval_dir / "results.jsonl") if r["episodes"] and r["episodes"][0].get("turns"))


def write_report(out: Path, runs: Path, seeds: list[int]) -> Path:
    """results.json, per_problem.jsonl, report.md and PNGs from the finished stages."""
    base_dir = runs / "base"
    if not (base_dir / "eval" / "metrics.json").exists():
        raise FileNotFoundError(f"{base_dir / 'eval' / 'metrics.json'}: the base evaluation has not finished")
    out.mkdir(parents=True, exist_ok=True)
    base_metrics = json.loads((base_dir / "eval" / "metrics.json").read_text())
    turns = base_metrics["max_turns"]
    k_at = f"1@{turns}"
    base = outcomes(base_dir / "eval")
    has_slice = (base_dir / "eval-train-slice" / "metrics.json").exists()
    base_slice = outcomes(base_dir / "eval-train-slice") if has_slice else None
    flags = [*([f"--runs {runs}"] if Path(runs) != Path("runs/learn") else []),
             *([f"--out {out}"] if Path(out) != Path(REPORT_OUT) else []),
             *([f"--seeds {','.join(map(str, seeds))}"] if list(seeds) != [0, 1] else [])]
    res: dict = {"regenerate": " ".join(["proctor learn --report-only", *flags]),
                 **({"trained_with": cmd} if (cmd := trained_with(runs, seeds)) else {}), "model": base_metrics["model"], "dataset": base_metrics["dataset"], "problems": base_metrics["problems"],
                 "max_turns": turns, "base_pass1": sum(base["pass@1"].values()), f"base_1at{turns}": sum(base[k_at].values()),
                 "base_invalid_turns": base_metrics["invalid_turns"],
                 "base_one_return": one_return_answers(base_dir / "eval"), "trained_one_return": [], "seeds": [], "trained_pass1": [],
                 f"trained_1at{turns}": [], "p_value": [], f"p_value_1at{turns}": [], "gained": [], "lost": [],
                 "base_retries": base_metrics.get("retries"), "trained_retries": [],
                 "recovered_by_feedback": [], "trained_invalid_turns": [], "wall_minutes": [], "iterations_minutes": [],
                 "learner_restarts": [], "runs_averaged": [], "train_slice": [], "rlef_sampled": []}
    has_sampled = (base_dir / SAMPLED / "metrics.json").exists()
    base_sampled = outcomes(base_dir / SAMPLED) if has_sampled else None
    per_problem, samples, trained = [], [], []
    for seed in seeds:
        run_dir = runs / f"seed{seed}"
        if not (run_dir / "eval" / "metrics.json").exists():
            continue
        m = json.loads((run_dir / "eval" / "metrics.json").read_text())
        tr = outcomes(run_dir / "eval")
        trained.append(tr)
        p1, pk = paired(base["pass@1"], tr["pass@1"]), paired(base[k_at], tr[k_at])
        wall = json.loads((run_dir / "wall.json").read_text()) if (run_dir / "wall.json").exists() else {}
        res["seeds"].append(seed)
        res["trained_pass1"].append(p1["trained"])
        res[f"trained_1at{turns}"].append(pk["trained"])
        res["p_value"].append(p1["p_value"])
        res[f"p_value_1at{turns}"].append(pk["p_value"])
        res["gained"].append(p1["gained"])
        res["lost"].append(p1["lost"])
        res["recovered_by_feedback"].append(m["recovered_by_feedback"])
        res["trained_invalid_turns"].append(m["invalid_turns"])
        res["trained_one_return"].append(one_return_answers(run_dir / "eval"))
        res["trained_retries"].append(m.get("retries"))
        res["wall_minutes"].append(round((train_seconds(run_dir) + wall.get("eval_s", 0)) / 60, 1))
        rows = [r for d in train_dirs(run_dir) if (d / "metrics.jsonl").exists() for r in read_jsonl(d / "metrics.jsonl")]
        res["iterations_minutes"].append(round(sum(r.get("iteration_s", 0.0) for r in rows) / 60, 1))
        res["learner_restarts"].append(sum(r.get("learner_restarts", 0) > 0 for r in rows))
        res["runs_averaged"].append(sum(d != run_dir for d in train_dirs(run_dir)) or 1)
        if has_slice and (run_dir / "eval-train-slice" / "metrics.json").exists():
            ts = outcomes(run_dir / "eval-train-slice")
            q1, qk = paired(base_slice["pass@1"], ts["pass@1"]), paired(base_slice[k_at], ts[k_at])
            res["train_slice"].append({"seed": seed, "problems": q1["n"], "base_pass1": q1["base"],
                                       "trained_pass1": q1["trained"], "p_value": q1["p_value"],
                                       f"base_1at{turns}": qk["base"], f"trained_1at{turns}": qk["trained"],
                                       f"p_value_1at{turns}": qk["p_value"]})
        if has_sampled and (run_dir / SAMPLED / "metrics.json").exists():
            ts = outcomes(run_dir / SAMPLED)
            q1, qk = paired(base_sampled["pass@1"], ts["pass@1"]), paired(base_sampled[k_at], ts[k_at])
            ms = json.loads((run_dir / SAMPLED / "metrics.json").read_text())
            res["rlef_sampled"].append({"seed": seed, "base_pass1": q1["base"], "trained_pass1": q1["trained"],
                                        "p_value": q1["p_value"], f"base_1at{turns}": qk["base"],
                                        f"trained_1at{turns}": qk["trained"], f"p_value_1at{turns}": qk["p_value"],
                                        "recovered_by_feedback": ms["recovered_by_feedback"]})
        for pid in base["pass@1"]:
            per_problem.append({"seed": seed, "id": pid, "base_pass1": base["pass@1"][pid],
                                "trained_pass1": tr["pass@1"][pid], f"base_1at{turns}": base[k_at][pid],
                                f"trained_1at{turns}": tr[k_at][pid]})
        for pid in (p1["gained"][:2] + p1["lost"][:1]):
            samples.append((seed, pid, pid in p1["gained"], _first_reply(base_dir / "eval", pid),
                            _first_reply(run_dir / "eval", pid)))
    if len(trained) > 1:  # every seed against the one base, problem by problem (with one seed: McNemar's test)
        res["all_seeds"] = {"pass1": all_seeds_exact(base["pass@1"], [t["pass@1"] for t in trained]),
                            f"1at{turns}": all_seeds_exact(base[k_at], [t[k_at] for t in trained])}
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    with open(out / "per_problem.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in per_problem)
    pngs = _plot(out, runs, res, turns)
    (out / "report.md").write_text(_markdown(res, turns, samples, pngs))
    return out / "report.md"


def _plot(out: Path, runs: Path, res: dict, turns: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("reward_mean", "mean episode reward"), ("solve_rate", "training episodes solved"),
              ("invalid_turn_frac", "turns without valid code"), ("learner/approx_kl", "KL to the sampling policy"),
              ("learner/entropy", "policy entropy (action tokens)"),
              ("retry_resubmitted_frac", "retries that resubmit code already run")]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    for ax, (key, title) in zip(axes.flat, panels):
        for seed in sorted({int(p.name[4:]) for p in runs.glob("seed*") if p.name[4:].isdigit()}):
            for d in train_dirs(runs / f"seed{seed}"):
                rows = read_jsonl(d / "metrics.jsonl") if (d / "metrics.jsonl").exists() else []
                if rows:
                    ax.plot([r["iteration"] for r in rows], [r.get(key, float("nan")) for r in rows], marker="o",
                            label=f"seed {seed}" + (f" run {d.name[6:]}" if d.name.startswith("member") else ""))
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    if axes.flat[0].lines:  # no seed has trained yet: nothing to label
        axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"training on {res['model']}")
    fig.savefig(out / "training.png", dpi=100)
    plt.close(fig)

    names = ["base", *(f"seed {s}" for s in res["seeds"])]
    p1 = [res["base_pass1"], *res["trained_pass1"]]
    pk = [res[f"base_1at{turns}"], *res[f"trained_1at{turns}"]]
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(names)), 4), constrained_layout=True)
    w = 0.38
    for k, (vals, label) in enumerate([(p1, "pass@1"), (pk, f"1@{turns}")]):
        bars = ax.bar([i + (k - 0.5) * w for i in range(len(names))], vals, w, label=label)
        ax.bar_label(bars, labels=[str(v) for v in vals])
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(f"problems solved (of {res['problems']})")
    ax.set_title(f"held-out {res['dataset']}, greedy")
    ax.legend()
    fig.savefig(out / "heldout.png", dpi=100)
    plt.close(fig)
    return ["training.png", "heldout.png"]


def _markdown(res: dict, turns: int, samples: list, pngs: list[str]) -> str:
    n = res["problems"]
    lines = [f"# Learning: {res['model']}, held-out {res['dataset']} ({n} problems, greedy)", "",
             f"Regenerate: `{res['regenerate']}`. Paired per problem against the untrained model; "
             "p = McNemar's exact test (two-sided).", "",
             *([f"Trained and evaluated with: `{res['trained_with']}`.", ""] if "trained_with" in res else []),
             f"| run | pass@1 | p | 1@{turns} | p | gained / lost (pass@1) | recovered by feedback | invalid turns "
             "| retries: changed / resubmitted / no function / no code | one-line answers | wall (train + eval) "
             "| the iterations alone |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|",
             f"| base | {res['base_pass1']}/{n} | | {res[f'base_1at{turns}']}/{n} | | | | {res['base_invalid_turns']} | "
             f"{retries_cell(res['base_retries'])} | {res['base_one_return']} | | |"]
    for i, seed in enumerate(res["seeds"]):
        lines.append(f"| seed {seed} | {res['trained_pass1'][i]}/{n} | {res['p_value'][i]:.3g} | "
                     f"{res[f'trained_1at{turns}'][i]}/{n} | {res[f'p_value_1at{turns}'][i]:.3g} | "
                     f"+{len(res['gained'][i])} / -{len(res['lost'][i])} | {res['recovered_by_feedback'][i]} | "
                     f"{res['trained_invalid_turns'][i]} | {retries_cell(res['trained_retries'][i])} | "
                     f"{res['trained_one_return'][i]} | {res['wall_minutes'][i]} min | "
                     f"{res['iterations_minutes'][i]} min |")
    lines += ["", "One-line answers: first attempts whose function's body, after its docstring, is one `return`."]
    if max(res["runs_averaged"], default=1) > 1:
        k = max(res["runs_averaged"])
        lines += ["", f"Each seed's policy is a soup: the mean of {k} training runs' LoRA adapters (`run.soup={k}`; seed S's "
                  f"runs train with `run.seed` = {k}·S + j). Wall and the iterations count all of its runs."]
    if "all_seeds" in res:
        a1, ak = res["all_seeds"]["pass1"], res["all_seeds"][f"1at{turns}"]
        lines += ["", f"All {a1['seeds']} seeds together, problem by problem against the one base evaluation (exact "
                  "permutation test: which of a problem's outcomes is the base's is relabelled; a problem flipped by "
                  f"one seed counts 1/{a1['seeds']}): pass@1 {a1['base']} -> {a1['trained_mean']:.1f} on average "
                  f"(p = {a1['p_value']:.3g}); 1@{turns} {ak['base']} -> {ak['trained_mean']:.1f} (p = {ak['p_value']:.3g})."]
    if res["train_slice"]:
        lines += ["", "Training source, the slice never trained on:", "",
                  f"| seed | problems | pass@1 base -> trained | p | 1@{turns} base -> trained | p |", "|---|---|---|---|---|---|"]
        for s in res["train_slice"]:
            lines.append(f"| {s['seed']} | {s['problems']} | {s['base_pass1']} -> {s['trained_pass1']} | {s['p_value']:.3g} | "
                         f"{s[f'base_1at{turns}']} -> {s[f'trained_1at{turns}']} | {s[f'p_value_1at{turns}']:.3g} |")
    if res["rlef_sampled"]:
        lines += ["", f"RLEF's sampling protocol on {res['dataset']} (temperature 0.2, top-p 0.95, one rollout per problem):", "",
                  f"| seed | pass@1 base -> trained | p | 1@{turns} base -> trained | p | recovered by feedback |",
                  "|---|---|---|---|---|---|"]
        for s in res["rlef_sampled"]:
            lines.append(f"| {s['seed']} | {s['base_pass1']} -> {s['trained_pass1']} | {s['p_value']:.3g} | "
                         f"{s[f'base_1at{turns}']} -> {s[f'trained_1at{turns}']} | {s[f'p_value_1at{turns}']:.3g} | "
                         f"{s['recovered_by_feedback']} |")
    lines += ["", *(f"![{p}]({p})" for p in pngs)]
    if samples:
        lines += ["", "## Before / after (first attempt)"]
        for seed, pid, gained, before, after in samples:
            lines += ["", f"### {pid}, seed {seed}: {'gained' if gained else 'lost'}", "", "Untrained:", "",
                      "````", before.strip(), "````", "", "Trained:", "", "````", after.strip(), "````"]
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="learn-cpu", help="the recipe: a YAML file or a shipped config's name")
    p.add_argument("--seeds", default="0,1", type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                   help="comma-separated training seeds")
    p.add_argument("--runs", default="runs/learn", help="run dirs (checkpoints, policies, evaluations)")
    p.add_argument("--out", default=REPORT_OUT, help="report dir (report.md, results.json, PNGs)")
    p.add_argument("--eval-limit", type=int, default=None, help="only the first N problems of data.eval (a quick look)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each seed's DeepSpeed checkpoint")
    p.add_argument("--report-only", action="store_true", help="redraw the report from what has finished")
    p.add_argument("--pool", metavar="REPORTS", default=None,
                   help="pool every REPORTS/learning*/per_problem.jsonl into REPORTS/learning-pooled/ (no training)")
    p.add_argument("--rlef-sampling", action="store_true",
                   help="also evaluate data.eval under RLEF's protocol (temperature 0.2, top-p 0.95), paired the same way")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, for every stage")
