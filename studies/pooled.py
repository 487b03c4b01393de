"""Every finished learning run at once: ``proctor learn --pool reports`` -> reports/learning-pooled/.

One run's McNemar test asks whether that policy beats the untrained model on HumanEval. The pool asks
what the runs do together, whatever their recipe: the gain per run and how often it is positive (an
exact sign test over runs), which problems move the same way in many runs, and how far the untrained
model's own greedy outcomes move between evaluation machines (the same weights, other CPUs: the
noise floor under every single-run comparison). Inputs: each ``reports/learning*/per_problem.jsonl``.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections import defaultdict
from pathlib import Path

from proctor.cluster.metrics import read_jsonl
from proctor.studies.stats import mcnemar_exact, net_needed, paired, seed_power

OUT = "learning-pooled"


def _copy_of_a_version(path: Path) -> bool:
    """``reports/learning/`` (the current recipe) whose per-problem file is a ``learning-vN/``'s, byte for
    byte: the same runs, counted once under the versioned name."""
    data = path.read_bytes()
    return path.parent.name == "learning" and any(
        p.read_bytes() == data for p in path.parent.parent.glob("learning-*/per_problem.jsonl")
        if p.parent.name != OUT)


def read_runs(reports: Path) -> list[dict]:
    """One entry per (report, seed): the base and trained pass@1 outcomes per problem."""
    runs = []
    for path in sorted(reports.glob("learning*/per_problem.jsonl")):
        if path.parent.name == OUT or _copy_of_a_version(path):
            continue
        by_seed: dict[int, tuple[dict, dict]] = defaultdict(lambda: ({}, {}))
        for n, r in enumerate(read_jsonl(path), 1):
            try:
                base, trained = by_seed[int(r["seed"])]
                base[r["id"]], trained[r["id"]] = bool(r["base_pass1"]), bool(r["trained_pass1"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path} line {n}: needs seed, id, base_pass1, trained_pass1 ({e!r})") from None
        for seed, (base, trained) in sorted(by_seed.items()):
            runs.append({"report": path.parent.name, "seed": seed, "base": base, "trained": trained})
    if not runs:
        raise FileNotFoundError(f"no {reports}/learning*/per_problem.jsonl to pool")
    return runs


def base_settings(runs: list[dict]) -> list[dict]:
    """The distinct untrained evaluations (one per machine / stack that ran them) and their flips."""
    groups: dict[frozenset, list[dict]] = {}
    for r in runs:
        groups.setdefault(frozenset(p for p, ok in r["base"].items() if ok), []).append(r)
    settings = [{"name": chr(ord("A") + i), "pass1": len(passed), "problems": len(runs[0]["base"]),
                 "reports": list(dict.fromkeys(r["report"] for r in rs)), "runs": len(rs),
                 "trained_mean": statistics.mean(sum(r["trained"].values()) for r in rs)}
                for i, (passed, rs) in enumerate(groups.items())]
    for (a, pa), (b, pb) in itertools.combinations(zip(settings, groups), 2):
        a.setdefault("flips", {})[b["name"]] = len(pa ^ pb)
        b.setdefault("flips", {})[a["name"]] = len(pa ^ pb)
    return settings


def power_by_report(rows: list[dict]) -> list[dict]:
    """What each report's runs imply for a per-seed goal (p < 0.05 on every seed): its flips per run and the
    share of them that are gains, the net a run needs at that many flips, and the chance that one seed (and
    two seeds) get there if every flip is a gain with that share."""
    out = []
    for report in dict.fromkeys(r["report"] for r in rows):
        rs = [r for r in rows if r["report"] == report]
        gained, lost = sum(r["gained"] for r in rs), sum(r["lost"] for r in rs)
        flips = round((gained + lost) / len(rs))
        share = gained / (gained + lost) if gained + lost else 0.5
        power = seed_power(flips, share)
        out.append({"report": report, "runs": len(rs), "gained": gained, "lost": lost, "gain_share": share,
                    "flips": flips, "net_needed": net_needed(flips), "seed_power": power, "two_seeds": power**2})
    return out


def pool(runs: list[dict]) -> dict:
    rows, moved = [], defaultdict(lambda: [0, 0])
    for r in runs:
        p = paired(r["base"], r["trained"])
        rows.append({"report": r["report"], "seed": r["seed"], "base": p["base"], "trained": p["trained"],
                     "gained": len(p["gained"]), "lost": len(p["lost"]), "p_value": p["p_value"]})
        for pid in p["gained"]:
            moved[pid][0] += 1
        for pid in p["lost"]:
            moved[pid][1] += 1
    gains = [r["trained"] - r["base"] for r in rows]
    up, down = sum(g > 0 for g in gains), sum(g < 0 for g in gains)
    by_net = sorted(moved.items(), key=lambda kv: (kv[1][0] - kv[1][1], kv[0]))
    return {"runs": rows, "n_runs": len(rows), "gain_mean": statistics.mean(gains),
            "gain_median": statistics.median(gains), "gain_sd": statistics.stdev(gains) if len(gains) > 1 else 0.0,
            "runs_up": up, "runs_down": down, "runs_same": len(gains) - up - down,
            "sign_test_p": mcnemar_exact(up, down),
            "significant_up": sum(r["p_value"] < 0.05 and r["trained"] > r["base"] for r in rows),
            "significant_down": sum(r["p_value"] < 0.05 and r["trained"] < r["base"] for r in rows),
            "churn_mean": statistics.mean(r["gained"] + r["lost"] for r in rows),
            "most_gained": [[pid, g, lo] for pid, (g, lo) in reversed(by_net[-10:]) if g > lo],
            "most_lost": [[pid, g, lo] for pid, (g, lo) in by_net[:10] if lo > g],
            "base_settings": base_settings(runs), "power": power_by_report(rows)}


def markdown(res: dict) -> str:
    n = res["n_runs"]
    lines = ["# Every learning run, pooled (held-out HumanEval, greedy pass@1)", "",
             "Regenerate: `proctor learn --pool reports`. Each row: one seed of one `reports/learning*/` run "
             "against its own untrained evaluation; p = McNemar's exact test. The runs differ in recipe.", "",
             f"- **{n} runs: gain {res['gain_mean']:+.1f} on average (median {res['gain_median']:+g}, sd "
             f"{res['gain_sd']:.1f}); {res['runs_up']} up, {res['runs_down']} down, {res['runs_same']} unchanged "
             f"(sign test p = {res['sign_test_p']:.3g})**; significant alone (p < 0.05): "
             f"{res['significant_up']} up, {res['significant_down']} down.",
             f"- Problems flipped per run (gained + lost): {res['churn_mean']:.1f} on average.",
             "- Gained in many runs (gained / lost, of " + str(n) + "): "
             + ", ".join(f"{p} {g}/{lo}" for p, g, lo in res["most_gained"]),
             "- Lost in many runs: " + ", ".join(f"{p} {g}/{lo}" for p, g, lo in res["most_lost"]), "",
             "## The untrained model on each evaluation machine", "",
             "The same weights, evaluated greedy by the same code on different machines and stack "
             "versions; flips = problems whose outcome differs between two settings.", "",
             "| setting | untrained pass@1 | flips against the others | trained runs | their mean pass@1 | reports |",
             "|---|---|---|---|---|---|"]
    for s in res["base_settings"]:
        flips = ", ".join(f"{k} {v}" for k, v in s.get("flips", {}).items())
        lines.append(f"| {s['name']} | {s['pass1']}/{s['problems']} | {flips} | {s['runs']} | {s['trained_mean']:.1f} | "
                     f"{', '.join(s['reports'])} |")
    lines += ["", "## What each report's runs imply for a per-seed goal", "",
              "p < 0.05 on one seed takes a net gain that grows with the problems a run flips. If each flip is a "
              "gain with the share seen over the report's runs, one seed gets there with the chance below "
              "(binomial), two seeds with its square. Best first.", "",
              "| report | runs | gained / lost (all runs) | gain share | flips per run | net needed | one seed | two seeds |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {p['report']} | {p['runs']} | +{p['gained']} / -{p['lost']} | {p['gain_share']:.2f} | {p['flips']} | "
              f"{p['net_needed'] if p['net_needed'] is not None else '-'} | {p['seed_power']:.2f} | {p['two_seeds']:.2f} |"
              for p in sorted(res["power"], key=lambda p: -p["seed_power"])]
    lines += ["", "## Runs", "", "| report | seed | base | trained | gained / lost | p |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['report']} | {r['seed']} | {r['base']} | {r['trained']} | +{r['gained']} / -{r['lost']} | "
              f"{r['p_value']:.3g} |" for r in res["runs"]]
    return "\n".join(lines) + "\n"


def write_pooled(reports: Path) -> Path:
    res = pool(read_runs(reports))
    out = reports / OUT
    out.mkdir(parents=True, exist_ok=True)
    (out / "pooled.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "report.md").write_text(markdown(res))
    return out / "report.md"
