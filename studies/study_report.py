"""The report of ``proctor study``: ``OUT/report.md`` with the arms' table, the per-problem pairs
(each arm against the untrained model, the papers' claims arm against arm) and PNG curves, drawn from
``OUT/results.jsonl`` and the arms' run dirs."""

from __future__ import annotations

from pathlib import Path

from proctor.cluster.config import CONFIG_DIR, shipped_name
from proctor.cluster.metrics import read_jsonl
from proctor.reward.outcome import RETRY_KINDS
from proctor.studies.stats import has_outcomes, outcomes, paired

# The papers' directions, each (arm, against, what the papers found): the report pairs them per problem.
CLAIMS = [("multi-turn", "feedback-random", "real execution feedback beats random feedback (RLEF)"),
          ("multi-turn", "feedback-none", "real execution feedback beats none"),
          ("multi-turn", "single-turn", "multi-turn training gains more at 1@T than single-turn (RLEF)"),
          ("prm-dense", "multi-turn", "dense PRM rewards >= outcome-only (PSGPO)"),
          ("prm-dense-critic", "multi-turn", "dense PRM rewards + critic init >= outcome-only (PSGPO)"),
          # the same two against outcome-only PPO with the same critic (on a critic-free recipe, the fair baseline)
          ("prm-dense", "outcome-critic", "dense PRM rewards >= outcome-only, both PPO with a critic (PSGPO)"),
          ("prm-dense-critic", "outcome-critic", "dense PRM rewards + critic init >= outcome-only, both PPO with "
           "a critic (PSGPO)")]


def read_rows(path: Path) -> list[dict]:
    return read_jsonl(path) if path.exists() else []


def latest(rows: list[dict]) -> dict[str, dict]:
    """The last row per arm (a rerun supersedes a failed or skipped attempt)."""
    return {r["arm"]: r for r in rows}


def _switch(arm: str) -> str:
    """The first sentence of the arm config's leading comment: what it changes."""
    path = CONFIG_DIR / "ablations" / f"{arm}.yaml"
    if not path.exists():
        return ""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("# ").strip())
    text = " ".join(words)
    return text.split(". ")[0].rstrip(".") + "." if text else ""


def _what(arm: str, row: dict) -> str:
    """The table's "what it changes": on a recipe other than local.yaml, the overrides themselves (the
    arm configs' comments speak of local.yaml)."""
    if "switch" in row and shipped_name(row["recipe"]) != "local":
        # each switched key with the value it trained under (the last override wins, e.g. --prm-model's)
        switch = dict(o.split("=", 1) for o in row["switch"])
        switch.update(o.split("=", 1) for o in row.get("overrides", []) if o.split("=", 1)[0] in switch)
        return " ".join(f"`{k}={v}`" for k, v in switch.items()) or "nothing: the recipe itself"
    return _switch(arm)


def _eval_slice(runs: Path) -> str:
    """Which problems the evaluations ran on, from the base evaluation's per-problem rows."""
    ids = [r["id"] for r in read_rows(runs / "base" / "eval" / "results.jsonl")]
    return f"{ids[0]} to {ids[-1]}" if ids else "?"


def _metrics(run_dir: Path) -> list[dict]:
    return read_rows(run_dir / "metrics.jsonl")


def _plot(out: Path, runs: Path, arms: list[str], rows: dict[str, dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    files = []
    panels = [("reward_mean", "mean episode reward"), ("solve_rate", "training episodes solved"),
              ("invalid_turn_frac", "turns without valid code"), ("learner/kl_ref", "KL to the initial policy"),
              ("turns_mean", "turns per episode"), ("reply_tokens_mean", "generated tokens per episode")]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    axes = axes.flat
    for ax, (key, title) in zip(axes, panels):
        for arm in arms:
            m = _metrics(runs / arm)
            if m:
                ax.plot([r["iteration"] for r in m], [r.get(key, float("nan")) for r in m], marker="o", label=arm)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if axes[0].lines:  # no arm has metrics yet: nothing to label
        axes[0].legend(fontsize=8)
    fig.suptitle("training, per iteration (the same problems in every arm)")
    fig.savefig(out / "training.png", dpi=100)
    plt.close(fig)
    files.append("training.png")

    evaluated = [x for x in ["base", *arms] if rows.get(x, {}).get("eval")]
    if evaluated:
        turns = rows[evaluated[0]]["eval"]["max_turns"]
        fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(evaluated)), 4), constrained_layout=True)
        width, xs = 0.38, range(len(evaluated))
        top = 0.0
        for k, (key, label) in enumerate([("pass@1", "pass@1"), (f"1@{turns}", f"1@{turns}")]):
            values = [rows[e]["eval"][key] for e in evaluated]
            bars = ax.bar([x + (k - 0.5) * width for x in xs], values, width, label=label)
            n = rows[evaluated[0]]["eval"]["problems"]
            ax.bar_label(bars, [f"{round(v * n)}/{n}" for v in values], fontsize=8)  # visible even at 0
            top = max(top, *values)
        ax.set_ylim(0, max(0.05, top * 1.25))
        ax.set_xticks(list(xs), evaluated, rotation=20)
        ax.set_ylabel("share of problems")
        ax.set_title(f"{rows[evaluated[0]]['eval']['dataset']}: {rows[evaluated[0]]['eval']['problems']} problems, greedy")
        ax.legend()
        ax.grid(alpha=0.3, axis="y")
        fig.savefig(out / "eval.png", dpi=100)
        plt.close(fig)
        files.append("eval.png")
    return files


def _same_episodes(arms: list[str], runs: Path, tol: float = 0.01) -> list[str]:
    """Arms whose training rollouts stayed (nearly) the same as another arm's after the first update.

    Every arm draws the same problems and sampling seeds per iteration, so before any update two arms
    with the same rollout settings sample identical episodes; if their generated tokens per episode
    still agree within ``tol`` after the updates, the updates barely moved the policy and any trend
    in their curves comes from the problems drawn, not from learning."""
    out = []
    curves = {a: [r.get("reply_tokens_mean") for r in _metrics(runs / a)] for a in arms}
    for i, a in enumerate(arms):
        for b in arms[i + 1:]:
            x, y = curves[a], curves[b]
            if len(x) > 1 and len(x) == len(y) and x[0] == y[0] and all(
                    u and v and abs(u - v) <= tol * max(u, v) for u, v in zip(x[1:], y[1:])):
                out.append(f"- {a} and {b} sampled (nearly) the same training episodes in every iteration (generated "
                           f"tokens per episode within {tol:.0%} after the updates: {', '.join(f'{u:.0f}/{v:.0f}' for u, v in zip(x, y))}): "
                           "their updates did not change what the policy samples, so their curves show the problems "
                           "drawn, not learning.")
    return out + ([""] if out else [])


def _pair(x: dict) -> str:
    return f"{x['base']} -> {x['trained']} (+{len(x['gained'])} / -{len(x['lost'])}, p = {x['p_value']:.3g})"


def _paired(arms: list[str], runs: Path) -> list[str]:
    """Per-problem pairs (McNemar's exact test): each arm against the untrained model, then the papers'
    claims arm against arm. Arms without per-problem results (an older study) are left out."""
    found = {a: outcomes(runs / a / "eval") for a in ["base", *arms]
             if has_outcomes(runs / a / "eval")}
    if "base" not in found or len(found) < 2:
        return []
    k13 = next(k for k in found["base"] if k != "pass@1")
    unlike = [a for a in arms if a in found and (k13 not in found[a] or set(found[a][k13]) != set(found["base"][k13]))]
    for a in unlike:  # evaluated on other problems or turns than base (a rerun with other --eval-* flags)
        del found[a]
    lines = ["## Paired per problem", "", "Solved counts, gained / lost problems and McNemar's exact p (two-sided, "
             "each test on its own: no correction for the number of tests)."]
    if unlike:
        lines.append(f"Left out, evaluated on other problems or turns than the untrained model: {', '.join(unlike)}.")
    lines += ["",
             f"| arm | against | pass@1 | {k13} |", "|---|---|---|---|"]
    lines += [f"| {a} | base | {_pair(paired(found['base']['pass@1'], found[a]['pass@1']))} | "
              f"{_pair(paired(found['base'][k13], found[a][k13]))} |" for a in arms if a in found]
    claims = [(a, b, text) for a, b, text in CLAIMS if a in found and b in found]
    if claims:
        lines += ["", f"The papers' directions, read at {k13} (the rollout the feedback arms change):", ""]
        for a, b, text in claims:
            x = paired(found[b][k13], found[a][k13])
            where = "ahead of" if x["trained"] > x["base"] else "behind" if x["trained"] < x["base"] else "level with"
            sig = "p < 0.05" if x["p_value"] < 0.05 else "not significant"
            lines.append(f"- {text}: {a} is {where} {b} ({b} -> {a}: {_pair(x)}; {sig}).")
    return [*lines, ""]


def _invalid(ev: dict) -> str:
    """Turns of the evaluation without valid code, of all its turns."""
    turns = sum(int(k) * v for k, v in ev.get("turns_used", {}).items())
    return f"{ev['invalid_turns']}/{turns}" if "invalid_turns" in ev else "-"


def retries_cell(counts: dict | None) -> str:
    """A held-out evaluation's retry kinds (``cluster.metrics.retry_kinds``); "-" where it predates them."""
    return " / ".join(str(counts[k]) for k in RETRY_KINDS) if counts else "-"


def _retry_table(rows: dict[str, dict], arms: list[str]) -> list[str]:
    """How each evaluated policy used its retries: what the papers' feedback claims are about."""
    shown = [a for a in ["base", *arms] if (rows.get(a) or {}).get("status") == "done" and rows[a].get("eval")]
    if not shown:
        return []
    lines = ["## Retries at evaluation", "", "Every model gets the real feedback here; the arms differ in what they "
             "were trained with.", "", f"| arm | recovered by feedback | retries: {' / '.join(RETRY_KINDS)} | "
             "generated tokens |", "|---|---|---|---|"]
    for a in shown:
        e = rows[a]["eval"]
        lines.append(f"| {a} | {e.get('recovered_by_feedback', '-')} | {retries_cell(e.get('retries'))} | "
                     f"{e.get('generated_tokens', '-')} |")
    return [*lines, ""]


def _fmt(x, spec=".3f") -> str:
    return format(x, spec) if isinstance(x, int | float) else "-"


def write_report(out: Path, runs: Path) -> Path:
    """``OUT/report.md`` (+ PNGs) from ``OUT/results.jsonl`` and the arms' metrics."""
    if not (out / "results.jsonl").exists():
        raise FileNotFoundError(f"{out / 'results.jsonl'} not found: nothing to report yet (proctor study start)")
    rows = latest(read_rows(out / "results.jsonl"))
    arms = [a for a in rows if a != "base"]
    files = _plot(out, runs, [a for a in arms if rows[a]["status"] == "done"], rows) if rows else []
    base = (rows.get("base") or {}).get("eval") or {}
    turns = base.get("max_turns", 3)
    k13 = f"1@{turns}"
    lines = ["# Learning study", ""]
    first_done = next((rows[a] for a in arms if rows[a]["status"] == "done"), None)
    if base:
        lines += [f"Evaluation: `{base['dataset']}`, {base['problems']} problems ({_eval_slice(runs)}), greedy, up to "
                  f"{turns} turns (pass@1 = the first attempt judged on the private tests; {k13} = the final attempt)."]
    if first_done:
        if "recipe" in first_done:
            lines += [f"Training: each arm is `proctor train --config {first_done['recipe']}` + its switch (the "
                      f"overrides in the table) + `{' '.join(first_done['shared'])}`."]
        else:  # a study from before --recipe
            lines += [f"Training: each arm is `configs/ablations/ARM.yaml` + `{' '.join(first_done['overrides'])}`."]
    lines += ["", f"| arm | what it changes | iterations | reward first -> last | invalid turns first -> last | "
              f"solved (train, last) | KL to ref (last) | pass@1 | {k13} | {k13} vs base (problems) | invalid eval turns | "
              "minutes |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    n_eval = base.get("problems", 0)
    if base:
        lines.append(f"| base | the untrained model | 0 | - | - | - | - | {_fmt(base['pass@1'])} | {_fmt(base[k13])} | "
                     f"- | {_invalid(base)} | {_fmt(rows['base'].get('eval_s', 0) / 60, '.1f')} |")
    deltas = []
    for arm in arms:
        r = rows[arm]
        if r["status"] != "done":
            why = r.get("reason") or f"failed at {r.get('stage', '?')}: {(r.get('error') or '').splitlines()[-1:]}"
            lines.append(f"| {arm} | {_switch(arm)} | - | {r['status']}: {why} | | | | | | | | |")
            continue
        m, e, s = _metrics(runs / arm), r["eval"], r["summary"]
        kl = m[-1].get("learner/kl_ref") if m else None
        invalid = f"{_fmt(m[0].get('invalid_turn_frac'), '.2f')} -> {_fmt(m[-1].get('invalid_turn_frac'), '.2f')}" if m else "-"
        delta = round((e[k13] - base[k13]) * n_eval) if base else None
        deltas.append((arm, delta, round((e["pass@1"] - base["pass@1"]) * n_eval) if base else None))
        lines.append(f"| {arm} | {_what(arm, r)} | {r['iterations']} | {_fmt(s.get('reward_first'))} -> "
                     f"{_fmt(s.get('reward_last'))} | {invalid} | {_fmt(s.get('solve_rate_last'), '.2f')} | {_fmt(kl, '.2e')} | "
                     f"{_fmt(e['pass@1'])} | {_fmt(e[k13])} | {delta if delta is not None else '-'} | "
                     f"{_invalid(e)} | {(r['train_s'] + r['eval_s']) / 60:.1f} |")
    lines += [""] + [f"![{f}]({f})" for f in files] + [""]
    if deltas and base:
        moved = [d for d in deltas if d[1] or d[2]]
        lines += ["## Reading", ""]
        if not moved:
            lines.append(f"No arm changed a single {base['dataset']} problem's outcome (pass@1 or {k13}) against the "
                         "untrained model.")
        for arm, d13, d1 in moved:
            lines.append(f"- {arm}: {d1:+d} problems at pass@1, {d13:+d} at {k13} (of {n_eval}).")
        lines.append("")
    lines += _retry_table(rows, arms)
    lines += _paired([a for a in arms if rows[a]["status"] == "done"], runs)
    lines += _same_episodes([a for a in arms if rows[a]["status"] == "done"], runs)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
