"""What a training run records: one JSONL row and TensorBoard scalars per iteration, the metrics of a
batch of episodes, the stage timer, the closing summary table, and reading the rows back."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from proctor.reward.lines import classify, line_shares
from proctor.reward.outcome import RETRY_KINDS, retry_kind


class MetricsLog:
    """One JSON line per iteration, the numeric values as TensorBoard scalars and, with ``wandb``
    (``{"project": ..., "config": {...}}``), as a Weights & Biases run (resumed by id in the same
    run dir, so a resumed training run goes on logging into the same W&B run)."""

    def __init__(self, run_dir: Path, wandb: dict | None = None):
        from torch.utils.tensorboard import SummaryWriter  # torch's import is slow: only when a run logs

        self.path = run_dir / "metrics.jsonl"
        self.tb = SummaryWriter(str(run_dir / "tb"))
        self.wandb = None
        if wandb is not None:
            import wandb as wb  # an optional sink: only imported when a run asks for it

            id_file = run_dir / "wandb_id.txt"
            run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
            id_file.write_text(run_id)
            self.wandb = wb.init(project=wandb["project"], config=wandb.get("config"), dir=str(run_dir), id=run_id,
                                 name=run_dir.name, resume="allow")

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        scalars = {k: v for k, v in row.items() if isinstance(v, int | float) and k != "iteration"}
        for key, value in scalars.items():
            self.tb.add_scalar(key, value, row["iteration"])
        self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=row["iteration"])

    def truncate(self, iterations: int) -> int:
        """Keep the rows of the first ``iterations`` (a resume from a checkpoint that an iteration
        logged after it did not reach); returns how many rows were dropped."""
        if not self.path.exists():
            return 0
        lines = [x for x in self.path.read_text().splitlines() if x.strip()]
        kept = [x for x in lines if json.loads(x)["iteration"] <= iterations]
        self.path.write_text("".join(x + "\n" for x in kept))
        return len(lines) - len(kept)

    def close(self) -> None:
        self.tb.close()
        if self.wandb is not None:
            import wandb as wb

            self.wandb.finish()
            # finish() returns once the run's exit is acknowledged; the W&B service writes the run's
            # .wandb record through a buffer it closes only when it shuts down. Tear it down so that a
            # closed log is on disk (`wandb sync` reads it) and no service outlives the run.
            wb.teardown()


class StageTimer:
    """``with timer("learn"): ...`` records ``learn_s``; ``timer.seconds`` holds every stage's time."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[f"{stage}_s"] = time.perf_counter() - t


def reply_line_metrics(episodes: list) -> dict:
    """Code lines per attempt and the comment share of the replies (watched for reward hacking)."""
    return line_shares([[k for _, k in classify(t.reply, e.entry_point)] for e in episodes for t in e.turns])


def retry_kinds(episodes: list) -> dict:
    """How many retries (turns after feedback) hold each of ``reward.outcome.RETRY_KINDS``: changed code,
    code an earlier turn ran, new code without the problem's function, no code. A shaping term on
    retries is gamed through the last two (an earlier recipe did): they are watched here."""
    counts = dict.fromkeys(RETRY_KINDS, 0)
    for e in episodes:
        for i, t in enumerate(e.turns[1:], start=1):
            counts[retry_kind(t, e.turns[:i], e.entry_point)] += 1
    return counts


def episode_metrics(episodes: list) -> dict:
    n = max(len(episodes), 1)
    retries = retry_kinds(episodes)
    return {**reply_line_metrics(episodes),
            "episodes": len(episodes),
            "solve_rate": sum(e.solved for e in episodes) / n,
            "first_turn_public_pass": sum(bool(e.turns) and e.turns[0].public_passed for e in episodes) / n,
            "turns_mean": sum(len(e.turns) for e in episodes) / n,
            "invalid_turn_frac": sum(t.code is None for e in episodes for t in e.turns) / max(
                sum(len(e.turns) for e in episodes), 1),
            "reply_tokens_mean": sum(sum(e.action_mask) for e in episodes) / n,
            **{f"retry_{k}_frac": v / max(sum(retries.values()), 1) for k, v in retries.items()}}


def summary(rows: list[dict], console: Console) -> dict:
    """The run's table on the console, and its summary (first and last reward, total time, last eval)."""
    table = Table(title="proctor train")
    cols = {"iteration": "iter", "reward_mean": "reward", "solve_rate": "solved", "turns_mean": "turns",
            "learner/kl_ref": "KL", "rollout_tokens_per_s": "rollout tok/s", "learner/tokens_per_s": "learn tok/s",
            "iteration_s": "s"}
    for header in cols.values():
        table.add_column(header, justify="right")
    for r in rows:
        table.add_row(*(f"{r.get(c, float('nan')):.3g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols))
    console.print(table)
    if not rows:
        return {"iterations": 0}
    return {"iterations": rows[-1]["iteration"], "reward_first": rows[0]["reward_mean"],
            "reward_last": rows[-1]["reward_mean"], "solve_rate_last": rows[-1]["solve_rate"],
            "total_s": sum(r["iteration_s"] for r in rows),
            **{k: v for k, v in rows[-1].items() if k.startswith("eval/")}}


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: RUN_DIR must be a directory written by proctor train")
    return read_jsonl(path)


def read_jsonl(path: Path) -> list[dict]:
    """One dict per non-empty line; a bad line is an error naming the file and line."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {n}: not JSON ({e.msg})") from None
    return rows
