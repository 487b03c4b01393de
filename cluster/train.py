"""``proctor train``: the RLEF training loop over Ray actor groups, read like single-process code.

    engines (vLLM) --episodes--> sandbox pool --verdicts--> rewards --samples--> learner group
        ^                                                                           |
        └──────────────────── weights (one ray.put per iteration) ──────────────────┘

Each iteration is four named, timed stages: ``rollout`` -> ``reward`` -> ``learn`` -> ``push``.
Synchronous: rollout k uses the weights after update k - 1 (version k). One-step-off
(``run.async_rollout``): rollout k + 1 runs on a background thread while the learner trains on k,
so its episodes are one version behind (and a reply in flight during a push finishes on the new
weights; it keeps the version it started under); PPO's ratio against the behaviour logprobs the
engine recorded corrects for the lag. Each iteration writes one JSON line to
``RUN_DIR/metrics.jsonl`` and the same scalars to TensorBoard (``RUN_DIR/tb``); the learner is
checkpointed to ``STORAGE/checkpoint`` every ``run.checkpoint_every`` iterations, and the policy
saved to ``STORAGE/policy`` (``run.storage``; the run dir by default). Only the driver's node reads
the run dir and the model: on a cluster the model's files reach the other nodes through the object
store (``cluster.model.ShippedModel``), and each learner rank writes its part of a checkpoint to the
storage from its own node.

vLLM, DeepSpeed and transformers are imported where an engine, a learner or a tokenizer starts (the
CLI imports this module only for ``proctor train``).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from rich.console import Console

from proctor.cluster.background import BackgroundLoop
from proctor.cluster.config import ProctorConfig, dump_config
from proctor.cluster.metrics import MetricsLog, StageTimer, episode_metrics, summary
from proctor.cluster.model import ShippedModel, resolve
from proctor.cluster.placement import Placement
from proctor.cluster.plot import plot
from proctor.cluster.progress import log_to, make_console, progress_of
from proctor.cluster.ray_local import init_ray, job_path, joined_cluster
from proctor.cluster.rollouts import heldout_metrics, rollout
from proctor.cluster.trajectory import to_samples
from proctor.learner.group import LearnerGroup, LearnerStartTimeout
from proctor.learner.storage import Storage
from proctor.problems import load_problems
from proctor.reward.score import Rewards, scoreable
from proctor.rollout.engine_group import EngineGroup, EngineUnavailable
from proctor.rollout.episode import FeedbackBank
from proctor.rollout.types import SamplingSpec
from proctor.sandbox_pool.pool import SandboxPool


class RunLost(RuntimeError):
    """Part of the run is gone and cannot be replaced; the last checkpoint stands (the message says how to resume)."""


class LearnerLost(RunLost):
    """A learner worker died and ``run.max_restarts`` is used up; the last checkpoint stands."""


# A learner worker that died (killed, crashed, out of memory): the learner is rebuilt from the checkpoint.
WORKER_LOST = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.OutOfMemoryError)


def iteration_problems(problems: list, cfg: ProctorConfig, iteration: int) -> list:
    """The problems of one iteration (0-based), seeded so a resumed run draws the same ones.
    ``run.draw=sample``: an independent draw per iteration. ``run.draw=epoch``: slice ``iteration`` of the
    stream of seeded shuffles of the whole set, one per pass (an iteration may straddle two passes)."""
    k, n, seed = min(cfg.run.problems_per_iteration, len(problems)), len(problems), cfg.run.seed
    if cfg.run.draw == "sample":
        return random.Random(seed * 1_000_003 + iteration).sample(problems, k)
    orders: dict[int, list[int]] = {}  # one shuffle per pass the iteration touches (at most two)
    out = []
    for pos in range(iteration * k, iteration * k + k):
        epoch, i = divmod(pos, n)
        if epoch not in orders:
            orders[epoch] = list(range(n))
            random.Random(f"{seed}:epoch:{epoch}").shuffle(orders[epoch])
        out.append(problems[orders[epoch][i]])
    return out


def train_turns(cfg: ProctorConfig, iteration: int) -> int:
    """Attempts per episode in training iteration ``iteration`` (0-based): one during the first
    ``rollout.single_turn_iterations``, then ``rollout.max_turns``."""
    r = cfg.rollout
    return 1 if iteration < r.single_turn_iterations else r.max_turns


def eval_due(cfg: ProctorConfig, done: int) -> bool:
    r = cfg.run
    return r.eval_problems > 0 and (done == r.iterations or (r.eval_every > 0 and done % r.eval_every == 0))


def reserve(cfg: ProctorConfig) -> Placement | None:
    """The run's placement group (``run.placement``), or None to schedule by CPU fractions."""
    r = cfg.run
    if r.placement == "none":
        return None
    return Placement.reserve(r.placement, learners=cfg.learner.world_size, learner_cpus=r.learner_cpus,
                             learner_gpus=r.learner_gpus, engines=cfg.rollout.engines, engine_cpus=r.engine_cpus,
                             engine_gpus=r.engine_gpus, timeout_s=r.placement_timeout_s)


@dataclass
class Run:
    """The stages of one training run (``setup`` builds them, ``teardown`` releases them): the engine
    group, the sandbox pool, the reward stage and the learner group, with the run's problems, log and
    checkpoint."""

    cfg: ProctorConfig
    run_dir: Path
    console: Console
    storage: Storage
    model_dir: str | ShippedModel
    critic_dir: str | ShippedModel | None
    tokenizer: Any
    problems: list
    heldout: list
    placement: Placement | None
    engines: EngineGroup
    pool: SandboxPool
    rewards: Rewards
    log: MetricsLog
    learner: LearnerGroup | None = None
    background: BackgroundLoop = field(default_factory=BackgroundLoop)
    bank: FeedbackBank = field(default_factory=FeedbackBank)
    restarts: int = 0

    @property
    def ckpt(self) -> Storage:
        return Storage(self.storage.child("checkpoint"))

    def build_learner(self):
        cfg, tok, p = self.cfg, self.tokenizer, self.placement
        self.learner = LearnerGroup(
            self.model_dir, cfg.learner, seed=cfg.run.seed, num_cpus_per_worker=cfg.run.learner_cpus,
            critic_dir=self.critic_dir,
            num_gpus_per_worker=cfg.run.learner_gpus, actor_options=p and p.learner,
            start_timeout_s=cfg.run.placement_timeout_s if p else None,
            pad_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        if cfg.learner.dtype == "auto":
            self.console.print(f"learner.dtype=auto -> {self.learner.dtype} (bf16 on a CPU with AMX or a CUDA GPU "
                               "with bf16, float32 elsewhere)")
        if cfg.learner.lora_rank and cfg.reward.prm_critic_init:
            critic = (f"its rank-{cfg.learner.critic_lora_rank} adapters and head train" if cfg.learner.critic_lora_rank
                      else "trains in full, without adapters")
            self.console.print(f"LoRA with reward.prm_critic_init: the policy trains rank-{cfg.learner.lora_rank} "
                               "adapters on its frozen base; the critic is a separate network started from the PRM "
                               f"(backbone and value head): {critic}")

    def record_placement(self) -> None:
        """``RUN_DIR/placement.json``: the node of each learner rank's and engine's bundle."""
        if self.placement:
            nodes = self.placement.nodes()
            (self.run_dir / "placement.json").write_text(json.dumps({"strategy": self.cfg.run.placement, **nodes}))
            self.console.print(f"placement ({self.cfg.run.placement}): learner ranks on nodes "
                               f"{[n[:8] for n in nodes['learner']]}, engines on {[n[:8] for n in nodes['engines']]}")

    def restore(self) -> int:
        """The learner from the last checkpoint (the initial weights if there is none), its weights
        pushed to the engines; returns the iterations that checkpoint holds."""
        ckpt = self.ckpt
        state = json.loads(ckpt.read_text("driver.json")) if ckpt.exists("driver.json") else {}
        done = state.get("iterations_done", 0)
        if done:  # the recorded tag: a newer one may be partial (a rank lost while saving it)
            self.learner.load(ckpt.location, state.get("tag"))
        self.push(done)
        return done

    def push(self, version: int) -> None:
        """The policy to the engines: the LoRA adapter alone where they serve one, else the full network."""
        ref = self.learner.adapter_ref() if self.cfg.rollout.max_lora_rank else self.learner.weights_ref()
        self.engines.load(ref, version=version)

    def save(self, done: int) -> None:
        """Every rank's part, then the record of it (driver.json), then the older checkpoint dropped."""
        tag = self.learner.save(self.ckpt.location)
        self.ckpt.write_text("driver.json", json.dumps({"iterations_done": done, "tag": tag}))
        self.learner.prune(self.ckpt.location, tag)

    def start_rollout(self, it: int) -> Future:
        """Iteration ``it``'s episodes, produced on the background thread: (episodes, seconds, engine stats)."""
        cfg, r = self.cfg, self.cfg.rollout

        async def run():
            t = time.perf_counter()
            self.engines.reset_stats()
            done = await rollout(
                iteration_problems(self.problems, cfg, it), self.engines, self.pool.judge, self.tokenizer,
                samples=r.samples_per_problem, max_turns=train_turns(cfg, it),
                spec=SamplingSpec(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens),
                seed=lambda i, j: (cfg.run.seed * 7919 + it) * 100_003 + i, feedback=r.feedback, bank=self.bank,
                rng=random.Random(cfg.run.seed + it), console=self.console, label=f"iteration {it + 1}: rollout")
            return done.flat(), time.perf_counter() - t, self.engines.stats()
        return self.background.submit(run)

    def heldout_eval(self, it: int) -> dict:
        """Greedy RLEF rollouts of the held-out problems, with ``proctor eval``'s metrics (``eval/...``)."""
        cfg, r = self.cfg, self.cfg.rollout
        done = asyncio.run(rollout(
            self.heldout, self.engines, self.pool.judge, self.tokenizer, samples=1, max_turns=r.max_turns,
            spec=SamplingSpec(temperature=0.0, max_tokens=r.max_new_tokens), seed=lambda i, j: None,
            feedback=r.feedback, bank=FeedbackBank(), rng=random.Random(cfg.run.seed + it), console=self.console,
            label=f"iteration {it + 1}: held-out eval ({cfg.data.eval})", first_attempt=True, catch=True))
        return {f"eval/{k}": v for k, v in heldout_metrics(done, r.max_turns).items()}

    def restart_learner(self, error: BaseException, it: int) -> int:
        """A learner worker died during iteration ``it + 1``: rebuild the learner from the last
        checkpoint (or raise ``LearnerLost`` once ``run.max_restarts`` is used up); returns the
        iteration to go on from."""
        if self.restarts >= self.cfg.run.max_restarts:
            raise LearnerLost(f"a learner worker died during iteration {it + 1} ({type(error).__name__}); "
                              f"run.max_restarts={self.cfg.run.max_restarts} used up. The last checkpoint "
                              f"stands: proctor train --resume {self.run_dir}") from None
        self.restarts += 1
        self.background.cancel()  # a rollout started ahead ran on weights that are now gone
        self.background = BackgroundLoop()
        self.learner.shutdown()
        for attempt in range(1, 4):
            try:
                self.build_learner()
                break
            except (*WORKER_LOST, LearnerStartTimeout) as e:
                # A new worker may land on the lost node before the cluster has declared it dead: try again.
                if isinstance(e, LearnerStartTimeout) or attempt == 3:
                    raise LearnerLost(f"a learner worker died during iteration {it + 1} ({type(error).__name__}) "
                                      f"and the learner could not be rebuilt: {e}. The last checkpoint stands: "
                                      f"proctor train --resume {self.run_dir}") from None
                self.console.print(f"[yellow]rebuilding the learner: a worker died while starting "
                                   f"({type(e).__name__}); attempt {attempt + 1} of 3[/]")
                time.sleep(5)
        self.record_placement()
        it = self.restore()
        self.log.truncate(it)
        self.console.print(f"[yellow]a learner worker died ({type(error).__name__}): learner rebuilt from "
                           f"{'the checkpoint after iteration ' + str(it) if it else 'the initial weights'} "
                           f"(restart {self.restarts} of {self.cfg.run.max_restarts}); going on from iteration {it + 1}[/]")
        return it


def setup(cfg: ProctorConfig, run_dir: Path, console: Console, resume: bool) -> tuple[Run, int]:
    """Start every stage of a run; returns it and the iterations already done (a resumed checkpoint's)."""
    from transformers import AutoTokenizer

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    storage = Storage(cfg.run.storage if "://" in cfg.run.storage else job_path(cfg.run.storage or run_dir))
    token = storage.probe()  # a storage that cannot be written answers now, not at the first checkpoint
    problems = load_problems(cfg.data.train, cfg.data.limit, cfg.data.skip)
    model_dir = str(resolve(cfg.model.name, cache_dir=Path(cfg.model.cache_dir) if cfg.model.cache_dir else None,
                            log=console.print))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    critic_dir = str(Path(cfg.reward.prm_model).resolve()) if cfg.reward.prm_critic_init else None
    init_ray(cfg.run.ray_address, num_cpus=None, timeout_s=cfg.run.placement_timeout_s)
    if joined_cluster() and cfg.run.placement == "none":
        console.print("[yellow]run.placement=none on a cluster: actors wait for resources without limit; "
                      "run.placement=pack fails within run.placement_timeout_s when the cluster cannot hold the run[/]")
    shipped: str | ShippedModel = model_dir
    shipped_critic: str | ShippedModel | None = critic_dir
    if joined_cluster():  # other nodes may not have the driver's disk: the weights travel in the object store
        model = ShippedModel.put(model_dir)
        shipped, shipped_critic = model, ShippedModel.put(critic_dir) if critic_dir else None
        console.print(f"model {model_dir} put in the object store ({sum(n for _, n in model.listing) / 2**20:.0f} MiB) "
                      "for nodes that lack it")
    console.print(f"checkpoints and policy -> {storage.location}")
    console.print(f"[bold]proctor train[/]: {len(problems)} problems from {cfg.data.train}, model {cfg.model.name}, "
                  f"{cfg.run.iterations} iterations -> {run_dir}")
    placement = reserve(cfg)
    if placement:
        console.print(f"placement group ({cfg.run.placement}): {len(placement.learner)} learner + "
                      f"{len(placement.engines)} engine bundles reserved")
    engines = EngineGroup(shipped, cfg.rollout, seed=cfg.run.seed, num_cpus=cfg.run.engine_cpus,
                          num_gpus=cfg.run.engine_gpus, actor_options=placement and placement.engines,
                          replace_timeout_s=cfg.run.placement_timeout_s)
    pool = SandboxPool(cfg.sandbox.actors, cfg.sandbox.backend, cfg.sandbox.slots,
                       output_bytes=cfg.sandbox.max_output_bytes)
    rewards = Rewards(cfg.reward, tokenizer.get_vocab(), cfg.learner.threads_per_worker or 1)
    heldout = load_problems(cfg.data.eval, cfg.run.eval_problems) if cfg.run.eval_problems else []
    wandb = {"project": cfg.run.wandb_project, "config": cfg.model_dump()} if cfg.run.wandb else None
    run = Run(cfg, run_dir, console, storage, shipped, shipped_critic, tokenizer, problems, heldout, placement, engines,
              pool, rewards, MetricsLog(run_dir, wandb))
    run.build_learner()
    run.learner.check_storage(storage.location, token)
    storage.clear_probe()
    engines.wait_ready()
    run.record_placement()
    start = 0
    if resume:
        start = run.restore()
        console.print(f"resumed from {run.ckpt.location} after iteration {start}" if start else
                      f"no checkpoint in {run.ckpt.location} (the run stopped before its first): starting from the "
                      "initial weights")
    # Rows past the checkpoint (a run killed between logging and saving) or of an earlier run in
    # this dir are dropped: those iterations run (again) now.
    if dropped := run.log.truncate(start):
        console.print(f"{run_dir / 'metrics.jsonl'}: {dropped} rows past iteration {start} dropped")
    return run, start


def teardown(run: Run) -> None:
    run.background.cancel()
    run.log.close()
    run.learner.shutdown()
    run.pool.shutdown()
    run.engines.shutdown()
    run.rewards.shutdown()
    if run.placement:
        run.placement.release()


def train(cfg: ProctorConfig, run_dir: Path, *, resume: bool = False, console: Console | None = None) -> dict:
    """The training loop; everything it prints is also kept, timestamped, in RUN_DIR/console.log."""
    console = console or make_console()
    run_dir.mkdir(parents=True, exist_ok=True)
    with log_to(console, run_dir / "console.log"):
        return _train(cfg, run_dir, resume, console)


def _train(cfg: ProctorConfig, run_dir: Path, resume: bool, console: Console) -> dict:
    run, start = setup(cfg, run_dir, console, resume)
    rows, it, done, stage, ahead, interrupted = [], start, start, "rollout", None, None
    try:
        while it < cfg.run.iterations:
            t0, timer, stage = time.perf_counter(), StageTimer(), "rollout"
            try:
                episodes, rollout_s, busy = (ahead or run.start_rollout(it)).result()
            except EngineUnavailable as e:
                raise RunLost(f"{e}; {f'the checkpoint after iteration {done} stands' if done else 'no checkpoint yet'}: "
                              f"proctor train --resume {run_dir}") from None
            ahead = run.start_rollout(it + 1) if cfg.run.async_rollout and it + 1 < cfg.run.iterations else None
            with timer("reward"):
                kept = scoreable(episodes)
                rewards = run.rewards(kept)
            samples = to_samples(kept, rewards)
            console.print(f"iteration {it + 1}: learner on {len(samples)} episodes")
            stage = "learn"
            try:
                with timer("learn"), progress_of(console, f"iteration {it + 1}: learner minibatches") as update:
                    stats = run.learner.train(samples, progress=update)
                stage = "push"
                with timer("push"):
                    run.push(it + 1)
            except WORKER_LOST as e:
                it, ahead = run.restart_learner(e, it), None
                rows = [r for r in rows if r["iteration"] <= it]
                continue
            stage, done = "done", it + 1
            row = {"iteration": done, "max_turns": train_turns(cfg, it), **episode_metrics(episodes),
                   "dropped_infra_error": len(episodes) - len(kept),
                   "policy_lag": it - sum(s.version for s in samples) / max(len(samples), 1),
                   "reward_mean": sum(sum(s.turn_rewards) for s in samples) / max(len(samples), 1),
                   **rewards.metrics, "rollout_s": rollout_s, **timer.seconds,
                   "rollout_tokens_per_s": sum(sum(e.action_mask) for e in episodes) / rollout_s,
                   "engine_busy_fraction": sum(b["busy_s"] for b in busy) / max(sum(b["wall_s"] for b in busy), 1e-9),
                   "engines_replaced": run.engines.replaced, "sandboxes_replaced": run.pool.replaced,
                   "learner_restarts": run.restarts, **{f"learner/{k}": v for k, v in stats.items() if k != "iteration"}}
            if eval_due(cfg, done):
                t_eval = time.perf_counter()
                row.update(run.heldout_eval(it), eval_s=time.perf_counter() - t_eval)
            row["iteration_s"] = time.perf_counter() - t0
            run.log.write(row)
            rows.append(row)
            if (cfg.run.checkpoint_every and done % cfg.run.checkpoint_every == 0) or done == cfg.run.iterations:
                try:
                    run.save(done)
                except WORKER_LOST as e:  # lost while saving: the previous checkpoint is whole
                    it, ahead = run.restart_learner(e, it), None
                    rows = [r for r in rows if r["iteration"] <= it]
                    continue
            console.print(f"iteration {done}: reward {row['reward_mean']:+.3f}, solved {row['solve_rate']:.2f}, "
                          f"{row['iteration_s']:.0f} s")
            it += 1
        if cfg.run.save_policy and done > start:
            console.print(f"policy (HF dir): {run.learner.save_policy(run.storage.child('policy'))}")
    except KeyboardInterrupt as e:
        interrupted = e
        run.background.cancel()  # a rollout in flight stops now instead of running to its end
        if stage in ("learn", "push"):  # the update may be half applied or not pushed: keep the last checkpoint
            console.print("[yellow]interrupted during a learner update: not saved; the last checkpoint stands[/]")
        else:
            run.save(done)
            console.print(f"[yellow]interrupted: saved after iteration {done}; continue with "
                          f"proctor train --resume {run_dir}[/]")
    finally:
        teardown(run)
    result = summary(rows, console)
    (run_dir / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    if rows:
        console.print(f"learning curves: {plot(run_dir)}")
    if interrupted:
        raise interrupted
    return result
