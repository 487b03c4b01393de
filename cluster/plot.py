"""``proctor plot RUN_DIR``: learning curves from ``metrics.jsonl`` as PNG files a person can open."""

from __future__ import annotations

from pathlib import Path

from proctor.cluster.metrics import read_metrics

PANELS = [
    ("reward", ["reward_mean"]),
    ("pass rate", ["solve_rate", "first_turn_public_pass"]),
    ("KL to reference", ["learner/kl_ref", "learner/approx_kl"]),
    ("reply tokens per episode", ["reply_tokens_mean"]),
    ("turns and retries", ["turns_mean", "invalid_turn_frac", "retry_resubmitted_frac", "retry_no_function_frac",
                           "retry_no_code_frac"]),
    ("tokens/s", ["rollout_tokens_per_s", "learner/tokens_per_s"]),
    ("losses", ["learner/policy_loss", "learner/value_loss"]),
    ("seconds per stage", ["rollout_s", "reward_s", "learn_s", "push_s"]),
    ("held-out (run.eval_problems, greedy)", ["eval/pass@1", "eval/1@2", "eval/1@3", "eval/1@4"]),
]


def plot(run_dir: Path, out: Path | None = None) -> Path:
    """One PNG with a panel per metric group against the iteration; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(3, 3, figsize=(18, 12), constrained_layout=True)
    for ax, (title, keys) in zip(axes.flat, PANELS):
        for key in keys:  # the iterations that have the key (held-out evaluations run every run.eval_every)
            points = [(r["iteration"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
            if points:
                ax.plot(*zip(*points), marker="o", label=key)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(f"proctor train: {run_dir}")
    out = out or run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
