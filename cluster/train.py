"""``proctor train``: the RLEF training loop over Ray actor groups, read like single-process code.

    engines (vLLM) --episodes--> sandbox pool --verdicts--> rewards --samples--> learner group
        ^                                                                           |
        └──────────────────── weights (one ray.put per iteration) ──────────────────┘

Synchronous: rollout k uses the weights after update k - 1 (version k). One-step-off
(``run.async_rollout``): rollout k + 1 runs on a background thread while the learner trains on k,
so its episodes are one version behind (and a reply in flight during a push finishes on the new
weights; it keeps the version it started under); PPO's ratio against the behaviour logprobs the
engine recorded corrects for the lag. Each iteration writes one
JSON line to ``RUN_DIR/metrics.jsonl`` and the same scalars to TensorBoard (``RUN_DIR/tb``); the
learner is checkpointed to ``RUN_DIR/checkpoint`` every ``run.checkpoint_every`` iterations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cluster.config import ConfigError, ProctorConfig, dump_config
from cluster.model import resolve
from cluster.placement import Placement
from cluster.problems import load_problems
from cluster.progress import make_console, progress
from cluster.trajectory import scoreable, to_samples
from reward.lines import classify, line_shares
from reward.shaping import dense_rewards, line_stats
from rollout.episode import FeedbackBank, run_episode
from rollout.types import SamplingSpec


class MetricsLog:
    """One JSON line per iteration, and the numeric values as TensorBoard scalars."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir / "metrics.jsonl"
        self.tb = SummaryWriter(str(run_dir / "tb"))

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for key, value in row.items():
            if isinstance(value, int | float) and key != "iteration":
                self.tb.add_scalar(key, value, row["iteration"])
        self.tb.flush()

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


def iteration_problems(problems: list, cfg: ProctorConfig, iteration: int) -> list:
    """The problems of one iteration: a seeded draw, so a resumed run draws the same ones."""
    rng = random.Random(cfg.run.seed * 1_000_003 + iteration)
    return rng.sample(problems, min(cfg.run.problems_per_iteration, len(problems)))


async def rollout(problems: list, generator, judge, tokenizer, cfg: ProctorConfig, iteration: int,
                  bank: FeedbackBank, console: Console, *, samples: int | None = None,
                  temperature: float | None = None, label: str = "rollout") -> list:
    """All episodes of one iteration as concurrent coroutines (``samples_per_problem`` each)."""
    r = cfg.rollout
    rng = random.Random(cfg.run.seed + iteration)
    temperature = r.temperature if temperature is None else temperature
    jobs = [(p, j) for p in problems for j in range(samples or r.samples_per_problem)]
    with progress(console, f"iteration {iteration + 1}: {label}", len(jobs)) as advance:

        async def one(i, problem):
            spec = SamplingSpec(temperature=temperature, top_p=r.top_p, max_tokens=r.max_new_tokens,
                                seed=(cfg.run.seed * 7919 + iteration) * 100_003 + i)
            ep = await run_episode(problem, generator, judge, tokenizer, max_turns=r.max_turns, spec=spec,
                                   feedback=r.feedback, feedback_bank=bank, rng=rng)
            advance()
            return ep

        return list(await asyncio.gather(*(one(i, p) for i, (p, _) in enumerate(jobs))))


class LearnerLost(RuntimeError):
    """A learner worker died and ``run.max_restarts`` is used up; the last checkpoint stands."""


def _worker_lost() -> tuple[type[BaseException], ...]:
    import ray

    return (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.OutOfMemoryError)


class BackgroundLoop:
    """One worker thread running coroutines on its own event loop; ``cancel()`` from the main thread
    cancels what runs there (a rollout in flight when Ctrl-C or SIGTERM arrives) and joins it."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout")
        self.loop: asyncio.AbstractEventLoop | None = None

    def submit(self, make_coro) -> Future:
        def run():
            self.loop = asyncio.new_event_loop()
            try:
                return self.loop.run_until_complete(make_coro())
            finally:
                self.loop.close()
        return self.pool.submit(run)

    def cancel(self) -> None:
        loop = self.loop
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to cancel
            loop and loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
        self.pool.shutdown(wait=True, cancel_futures=True)


def eval_due(cfg: ProctorConfig, done: int) -> bool:
    r = cfg.run
    return r.eval_problems > 0 and (done == r.iterations or (r.eval_every > 0 and done % r.eval_every == 0))


def heldout_metrics(episodes: list, turns: int) -> dict:
    """Greedy rollouts on the held-out slice: RLEF's 1@T and the share solved at the first attempt."""
    n = max(len(episodes), 1)
    return {f"eval/1@{turns}": sum(e.solved for e in episodes) / n,
            "eval/solved_first_turn": sum(e.solved and len(e.turns) == 1 for e in episodes) / n,
            "eval/problems": len(episodes)}


def reply_line_metrics(episodes: list) -> dict:
    """Code lines per attempt and the comment share of the replies (watched for reward hacking)."""
    return line_shares([[k for _, k in classify(t.reply, e.entry_point)] for e in episodes for t in e.turns])


class ProcessRewards:
    """The PRM scoring actor and PSGPO's dense shaping of a batch of episodes."""

    def __init__(self, cfg: ProctorConfig, tokenizer):
        import ray

        from reward.actor import prm_actor_class

        r = cfg.reward
        self.cfg, self.replaced = r, 0
        self._spawn = lambda: prm_actor_class().options(num_cpus=r.prm_cpus).remote(
            str(Path(r.prm_model).resolve()), cfg.learner.threads_per_worker or 1)
        self.actor = self._spawn()
        if ray.get(self.actor.vocab.remote()) != tokenizer.get_vocab():
            raise ValueError(f"reward.prm_model {r.prm_model}: its tokenizer differs from the policy's; the PRM "
                             "reads the policy's token ids, so it must share the policy's vocabulary")

    def __call__(self, episodes: list) -> tuple[list[list[float]], dict]:
        import ray

        request = [(e.token_ids, [t.reply_span for t in e.turns], e.entry_point) for e in episodes]
        try:
            scored = ray.get(self.actor.score.remote(request))
        except _worker_lost() as e:  # replaced like engines and sandbox actors; a second loss is an error
            logging.getLogger(__name__).warning("the PRM actor died (%s): replaced, batch scored again",
                                                type(e).__name__)
            self.actor, self.replaced = self._spawn(), self.replaced + 1
            scored = ray.get(self.actor.score.remote(request))
        dense = [dense_rewards(len(e.token_ids), replies, e.solved, self.cfg.prm_weight_correct,
                               self.cfg.prm_weight_incorrect) for e, replies in zip(episodes, scored)]
        stats = line_stats([r for replies in scored for r in replies])
        return dense, {"prm/score_mean": stats["score_mean"], "prm/actors_replaced": self.replaced,
                       "prm/dense_reward_mean": sum(map(sum, dense)) / max(len(dense), 1)}

    def shutdown(self) -> None:
        import ray

        ray.kill(self.actor)


def episode_metrics(episodes: list) -> dict:
    n = max(len(episodes), 1)
    return {**reply_line_metrics(episodes),
        "episodes": len(episodes),
        "solve_rate": sum(e.solved for e in episodes) / n,
        "first_turn_public_pass": sum(bool(e.turns) and e.turns[0].public_passed for e in episodes) / n,
        "turns_mean": sum(len(e.turns) for e in episodes) / n,
        "invalid_turn_frac": sum(t.code is None for e in episodes for t in e.turns) / max(
            sum(len(e.turns) for e in episodes), 1),
        "reply_tokens_mean": sum(sum(e.action_mask) for e in episodes) / n,
    }


def reserve(cfg: ProctorConfig) -> Placement | None:
    """The run's placement group (``run.placement``), or None to schedule by CPU fractions."""
    r = cfg.run
    if r.placement == "none":
        return None
    return Placement.reserve(r.placement, learners=cfg.learner.world_size, learner_cpus=r.learner_cpus,
                             learner_gpus=r.learner_gpus, engines=cfg.rollout.engines, engine_cpus=r.engine_cpus,
                             engine_gpus=r.engine_gpus, timeout_s=r.placement_timeout_s)


def train(cfg: ProctorConfig, run_dir: Path, *, resume: bool = False, console: Console | None = None) -> dict:
    from transformers import AutoTokenizer

    from cluster.ray_local import init_ray
    from learner.group import LearnerGroup
    from rollout.engine import EngineGroup
    from sandbox_pool.pool import SandboxPool

    console = console or make_console()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    problems = load_problems(cfg.data.train, cfg.data.limit, cfg.data.skip)
    model_dir = str(resolve(cfg.model.name, cache_dir=Path(cfg.model.cache_dir) if cfg.model.cache_dir else None,
                            log=console.print))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    init_ray(cfg.run.ray_address, num_cpus=None)
    console.print(f"[bold]proctor train[/]: {len(problems)} problems from {cfg.data.train}, model {cfg.model.name}, "
                  f"{cfg.run.iterations} iterations -> {run_dir}")

    placement = reserve(cfg)
    if placement:
        console.print(f"placement group ({cfg.run.placement}): {len(placement.learner)} learner + "
                      f"{len(placement.engines)} engine bundles reserved")
    engines = EngineGroup(model_dir, cfg.rollout, seed=cfg.run.seed, num_cpus=cfg.run.engine_cpus,
                          num_gpus=cfg.run.engine_gpus, actor_options=placement and placement.engines)
    pool = SandboxPool(cfg.sandbox.actors, cfg.sandbox.backend, cfg.sandbox.slots,
                       output_bytes=cfg.sandbox.max_output_bytes)
    prm = ProcessRewards(cfg, tokenizer) if cfg.reward.prm else None

    def build_learner() -> LearnerGroup:
        return LearnerGroup(model_dir, cfg.learner, seed=cfg.run.seed, num_cpus_per_worker=cfg.run.learner_cpus,
                            critic_dir=str(Path(cfg.reward.prm_model).resolve()) if cfg.reward.prm_critic_init else None,
                            num_gpus_per_worker=cfg.run.learner_gpus, actor_options=placement and placement.learner,
                            pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)

    learner = build_learner()
    engines.wait_ready()
    log = MetricsLog(run_dir)
    ckpt = run_dir / "checkpoint"
    start = 0

    def restore() -> int:
        """The learner from the last checkpoint (the initial weights if there is none), its weights
        pushed to the engines; returns the iterations that checkpoint holds."""
        done = json.loads((ckpt / "driver.json").read_text())["iterations_done"] if (ckpt / "driver.json").exists() else 0
        if done:
            learner.load(str(ckpt))
        engines.load(learner.weights_ref(), version=done)
        return done

    if resume:
        if not (ckpt / "driver.json").exists():
            raise ConfigError(f"{ckpt / 'driver.json'} not found: this run dir has no checkpoint to resume from")
        start = restore()
        console.print(f"resumed from {ckpt} after iteration {start}")
    # Rows past the checkpoint (a run killed between logging and saving) or of an earlier run in
    # this dir are dropped: those iterations run (again) now.
    if dropped := log.truncate(start):
        console.print(f"{run_dir / 'metrics.jsonl'}: {dropped} rows past iteration {start} dropped")
    bank = FeedbackBank()
    heldout = load_problems(cfg.data.eval, cfg.run.eval_problems) if cfg.run.eval_problems else []
    rows: list[dict] = []
    done, phase, interrupted = start, "rollout", None

    def save(done: int) -> None:
        learner.save(str(ckpt))
        (ckpt / "driver.json").write_text(json.dumps({"iterations_done": done}))

    def start_rollout(it: int) -> Future:
        """Iteration ``it``'s episodes, produced on the background thread."""
        async def run():
            t = time.perf_counter()
            engines.reset_stats()
            eps = await rollout(iteration_problems(problems, cfg, it), engines, pool.judge, tokenizer, cfg, it, bank,
                                console)
            return eps, time.perf_counter() - t, engines.stats()
        return background.submit(run)

    background = BackgroundLoop()
    ahead: Future | None = None
    restarts, it = 0, start
    WORKER_LOST = _worker_lost()
    try:
        while it < cfg.run.iterations:
            t0, phase = time.perf_counter(), "rollout"
            # Synchronous: roll out now with the newest weights. One-step-off: this iteration's
            # episodes were started during the previous update (one version behind).
            episodes, t_roll, busy = (ahead or start_rollout(it)).result()
            ahead = None
            if cfg.run.async_rollout and it + 1 < cfg.run.iterations:
                ahead = start_rollout(it + 1)
            kept = scoreable(episodes)
            dense, prm_metrics = prm(kept) if prm else (None, {})
            samples, dropped = to_samples(kept, cfg.reward, dense), len(episodes) - len(kept)
            console.print(f"iteration {it + 1}: learner on {len(samples)} episodes")
            t1, phase = time.perf_counter(), "learn"
            try:
                lm = learner.train(samples)
            except WORKER_LOST as e:
                if restarts >= cfg.run.max_restarts:
                    raise LearnerLost(f"a learner worker died during iteration {it + 1} ({type(e).__name__}); "
                                      f"run.max_restarts={cfg.run.max_restarts} used up. The last checkpoint "
                                      f"stands: proctor train --resume {run_dir}") from None
                restarts += 1
                if ahead is not None:
                    background.cancel()
                    background, ahead = BackgroundLoop(), None
                learner.shutdown()
                learner = build_learner()
                it = restore()
                log.truncate(it)
                rows = [r for r in rows if r["iteration"] <= it]
                console.print(f"[yellow]a learner worker died ({type(e).__name__}): learner rebuilt from "
                              f"{'the checkpoint after iteration ' + str(it) if it else 'the initial weights'} "
                              f"(restart {restarts} of {cfg.run.max_restarts}); going on from iteration {it + 1}[/]")
                continue
            t2 = time.perf_counter()
            engines.load(learner.weights_ref(), version=it + 1)
            t3, phase, done = time.perf_counter(), "done", it + 1
            row = {"iteration": done, **episode_metrics(episodes), "dropped_infra_error": dropped,
                   "policy_lag": it - sum(s.version for s in samples) / max(len(samples), 1),
                   "reward_mean": sum(sum(s.turn_rewards) for s in samples) / max(len(samples), 1),
                   **prm_metrics,
                   "rollout_s": t_roll, "learn_s": t2 - t1, "push_s": t3 - t2,
                   "rollout_tokens_per_s": sum(sum(e.action_mask) for e in episodes) / t_roll,
                   "engine_busy_fraction": sum(b["busy_s"] for b in busy) / max(sum(b["wall_s"] for b in busy), 1e-9),
                   "engines_replaced": engines.replaced, "sandboxes_replaced": pool.replaced,
                   "learner_restarts": restarts,
                   **{f"learner/{k}": v for k, v in lm.items() if k != "iteration"}}
            if eval_due(cfg, done):
                evals = asyncio.run(rollout(heldout, engines, pool.judge, tokenizer, cfg, it, FeedbackBank(), console,
                                            samples=1, temperature=0.0, label=f"held-out eval ({cfg.data.eval})"))
                row.update(heldout_metrics(evals, cfg.rollout.max_turns))
            row["iteration_s"] = time.perf_counter() - t0
            log.write(row)
            rows.append(row)
            if (cfg.run.checkpoint_every and done % cfg.run.checkpoint_every == 0) or done == cfg.run.iterations:
                save(done)
            console.print(f"iteration {done}: reward {row['reward_mean']:+.3f}, solved {row['solve_rate']:.2f}, "
                          f"{row['iteration_s']:.0f} s")
            it += 1
        if cfg.run.save_policy and done > start:
            console.print(f"policy (HF dir): {learner.save_policy(str(run_dir / 'policy'))}")
    except KeyboardInterrupt as e:
        interrupted = e
        background.cancel()  # a rollout in flight stops now instead of running to its end
        if phase == "learn":  # the update may be half applied: keep the last checkpoint
            console.print("[yellow]interrupted during a learner update: not saved; the last checkpoint stands[/]")
        else:
            save(done)
            console.print(f"[yellow]interrupted: saved after iteration {done}; continue with "
                          f"proctor train --resume {run_dir}[/]")
    finally:
        background.cancel()
        log.close()
        learner.shutdown()
        pool.shutdown()
        engines.shutdown()
        if prm:
            prm.shutdown()
        if placement:
            placement.release()
    summary = _summary(rows, console)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if rows:
        from cluster.plot import plot

        console.print(f"learning curves: {plot(run_dir)}")
    if interrupted:
        raise interrupted
    return summary


def _summary(rows: list[dict], console: Console) -> dict:
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
