"""One study over several seeds: ``proctor study seeds --runs RUNS_A,RUNS_B --out OUT``.

``proctor study`` trains one seed per arm (``run.seed=N`` as a study override, one ``--runs`` dir per
seed). This reads the arms' evaluations from every such dir, checks that they share one untrained
evaluation (the same per-problem outcomes), and pairs per problem over all seeds at once: each arm
against the untrained model and the papers' claims arm against arm (``groups_exact``: an exact
permutation test over the seeds of both sides). Writes ``OUT/report.md`` and ``OUT/results.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from proctor.studies.stats import groups_exact, has_outcomes, outcomes
from proctor.studies.study import ARMS
from proctor.studies.study_report import CLAIMS


def _seed(arm_dir: Path) -> int | None:
    """The arm's ``run.seed`` from the config it was trained under (None where none was saved)."""
    saved = arm_dir / "config.yaml"
    return yaml.safe_load(saved.read_text()).get("run", {}).get("seed") if saved.exists() else None


def read_seeds(runs: list[Path]) -> tuple[dict, dict[str, list[tuple[int | None, dict]]], str]:
    """The untrained outcomes, each arm's (seed, outcomes) per seed dir (in ``runs`` order) and the 1@T key."""
    if len({d.resolve() for d in runs}) < len(runs):
        raise ValueError(f"--runs names a run dir twice ({', '.join(map(str, runs))}): each dir is one seed")
    base, arms = None, {}
    order = {a: i for i, a in enumerate(ARMS)}  # the study's order: the recipe (multi-turn) first
    for d in runs:
        if not has_outcomes(d / "base" / "eval"):
            raise FileNotFoundError(f"{d / 'base' / 'eval'}: no untrained evaluation (results.jsonl, metrics.json)")
        b = outcomes(d / "base" / "eval")
        if base is not None and b != base:
            raise ValueError(f"{d / 'base' / 'eval'}: another untrained evaluation than {runs[0] / 'base' / 'eval'}'s "
                             "(the seeds must share one; copy it in before the study)")
        base = b
        for arm_dir in sorted((p for p in d.iterdir() if p.is_dir() and p.name != "base" and has_outcomes(p / "eval")),
                              key=lambda p: (order.get(p.name, len(order)), p.name)):
            got, seed = outcomes(arm_dir / "eval"), _seed(arm_dir)
            if set(got) != set(base) or set(got["pass@1"]) != set(base["pass@1"]):
                raise ValueError(f"{arm_dir / 'eval'}: evaluated on other problems or turns than the untrained model")
            if seed is not None and seed in [s for s, _ in arms.get(arm_dir.name, [])]:
                raise ValueError(f"{arm_dir}: arm {arm_dir.name} trained with run.seed={seed} in another --runs dir too "
                                 "(one seed would count twice)")
            arms.setdefault(arm_dir.name, []).append((seed, got))
    if base is None:
        raise ValueError("study seeds needs at least one --runs dir")
    return base, arms, next(k for k in base if k != "pass@1")


def _recovered(o: dict, k13: str) -> int:
    return sum(o[k13][p] and not o["pass@1"][p] for p in o["pass@1"])


def seeds_results(runs: list[Path], out: Path) -> dict:
    base, arms, k13 = read_seeds(runs)
    res: dict[str, Any] = {"regenerate": f"proctor study seeds --runs {','.join(map(str, runs))} --out {out}", "at": k13,
           "base": {m: sum(base[m].values()) for m in ("pass@1", k13)}, "arms": {}, "claims": []}
    for arm, evals in arms.items():
        res["arms"][arm] = {"seeds": [seed for seed, _ in evals], "recovered": [_recovered(o, k13) for _, o in evals],
                            **{m: {"per_seed": [sum(o[m].values()) for _, o in evals],
                                   **groups_exact([o[m] for _, o in evals], [base[m]])} for m in ("pass@1", k13)}}
    for a, b, text in CLAIMS:
        if a in arms and b in arms:
            res["claims"].append({"arm": a, "against": b, "claim": text,
                                  "seeds": [res["arms"][a]["seeds"], res["arms"][b]["seeds"]],
                                  **{m: groups_exact([o[m] for _, o in arms[a]], [o[m] for _, o in arms[b]])
                                     for m in ("pass@1", k13)}})
    return res


def _seeds(seeds: list) -> str:
    return ", ".join("?" if x is None else str(x) for x in seeds)


def _cell(x: dict) -> str:
    return f"{x['a_mean']:.1f} ({' / '.join(map(str, x['per_seed']))}; p = {x['p_value']:.3g})"


def markdown(res: dict) -> str:
    k13 = res["at"]
    lines = ["# Learning study over seeds", "",
             f"Regenerate: `{res['regenerate']}`. One seed per run dir (`run.seed` of the arm's saved config), "
             "one untrained evaluation shared by all; p = the exact permutation test over every seed on each side, "
             "problem by problem (one seed against one: McNemar's exact test). The unit is the problem: the test asks "
             "whether these trained models differ, not whether another seed of each arm would (a seed's luck moves "
             "many problems at once); read it beside the per-seed counts.", "",
             f"| arm | seeds | pass@1: mean (per seed, in the seeds' order; p against untrained) | {k13} | "
             "recovered by feedback |", "|---|---|---|---|---|",
             f"| untrained | - | {res['base']['pass@1']} | {res['base'][k13]} | |"]
    for arm, r in res["arms"].items():
        lines.append(f"| {arm} | {_seeds(r['seeds'])} | {_cell(r['pass@1'])} | {_cell(r[k13])} | "
                     f"{' / '.join(map(str, r['recovered']))} |")
    if res["claims"]:
        lines += ["", f"The papers' directions, arm against arm over all seeds (read at {k13}; pass@1 beside):", ""]
    for c in res["claims"]:
        x, y = c[k13], c["pass@1"]
        where = "ahead of" if x["diff"] > 0 else "behind" if x["diff"] < 0 else "level with"
        lines.append(f"- {c['claim']}: {c['arm']} (seeds {_seeds(c['seeds'][0])}) is {where} {c['against']} "
                     f"(seeds {_seeds(c['seeds'][1])}) at "
                     f"{k13}: {x['a_mean']:.1f} vs {x['b_mean']:.1f}, p = {x['p_value']:.3g}"
                     f"{' (p < 0.05)' if x['p_value'] < 0.05 else ''}; pass@1 {y['a_mean']:.1f} vs {y['b_mean']:.1f}, "
                     f"p = {y['p_value']:.3g}.")
    return "\n".join(lines) + "\n"


def _plot(out: Path, res: dict) -> str:
    """``eval.png``: each arm's mean pass@1 and 1@T over its seeds as bars, every seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k13, names = res["at"], ["untrained", *res["arms"]]
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(names)), 4), constrained_layout=True)
    width = 0.38
    for k, m in enumerate(("pass@1", k13)):
        seeds = [[res["base"][m]], *(r[m]["per_seed"] for r in res["arms"].values())]
        xs = [i + (k - 0.5) * width for i in range(len(names))]
        bars = ax.bar(xs, [sum(v) / len(v) for v in seeds], width, label=f"{m} (mean over seeds)")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        for x, v in zip(xs, seeds):
            ax.plot([x] * len(v), v, "k.", ms=6)
    ax.set_xticks(range(len(names)), [f"{n} ({len(res['arms'][n]['seeds']) if n in res['arms'] else 1})" for n in names],
                  rotation=20)
    ax.set_ylabel("problems solved (dots: one seed each)")
    ax.set_ylim(0, 1.3 * max(max(r[k13]["per_seed"]) for r in res["arms"].values()) if res["arms"] else None)
    ax.set_title("held-out evaluation, each arm over its seeds (in brackets)")
    ax.legend(loc="upper left", ncol=2)
    ax.grid(alpha=0.3, axis="y")
    fig.savefig(out / "eval.png", dpi=100)
    plt.close(fig)
    return "eval.png"


def write_seeds_report(out: Path, runs: list[Path]) -> Path:
    res = seeds_results(runs, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "report.md").write_text(markdown(res) + f"\n![{_plot(out, res)}](eval.png)\n")
    return out / "report.md"
