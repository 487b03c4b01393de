"""One data-parallel PPO worker: actor, critic and frozen reference, each a DeepSpeed engine.

``PPOWorker`` is plain Python (a single process runs it as-is, world size 1); ``learner.group``
runs W of them as Ray actors forming one torch.distributed group (gloo on CPU, nccl on GPU). Every
collective here (micro-batch counts, metric and whitening sums, ZeRO reductions and gathers,
checkpoints) is entered by all ranks in the same order, so every rank must get an equal share of
each batch.

One ``train(samples)`` call is one PPO iteration on one rollout batch:
1. no-grad forwards: reference logprobs, critic values (and the actor's own logprobs when
   ``old_logprobs=recompute``);
2. rewards = outcome per turn + dense per token - beta * KL to the reference; GAE at turn or token
   level; advantages whitened over all ranks;
3. ``ppo_epochs`` passes over shuffled minibatches; each minibatch is cut into length-bucketed
   micro-batches whose gradients accumulate (each loss weighted by its share of the minibatch's
   tokens, so the step sees the token mean of the whole minibatch), then one optimizer step for
   the actor and one for the critic.
With ``learner.advantage=grpo|rloo`` there is no critic: each episode's advantage comes from the
other episodes of its problem (set on the whole batch before it is split over workers), and the KL
to the reference is a k3 loss term instead of a reward penalty.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from proctor.learner import checkpoint, ppo
from proctor.learner.batch import (
    Batch,
    Sample,
    assign_group_advantages,
    bucket_count,
    buckets,
    collate,
    forward_mask,
    padding_stats,
)
from proctor.learner.config import LearnerConfig
from proctor.learner.deepspeed_setup import init_deepspeed, make_engine
from proctor.learner.lora import (
    adapter_files,
    merged_named,
    reference,
    save_adapter,
    trainable_count,
)
from proctor.learner.memory import peak_rss_gib, release_memory
from proctor.learner.model import (
    action_logprobs,
    host_copy,
    load_policy,
    resolve_dtype,
    save_policy_dir,
    to_numpy,
)
from proctor.learner.networks import build_critic, build_policy
from proctor.learner.storage import Storage


class PPOWorker:
    def __init__(self, model_dir: str | os.PathLike, cfg: LearnerConfig, *, rank: int = 0, world_size: int = 1,
                 master_addr: str = "127.0.0.1", master_port: int = 29500, seed: int = 0,
                 critic_dir: str | os.PathLike | None = None, pad_id: int | None = None):
        # A path of this node, or a model the driver shipped (``cluster.model.ShippedModel``): its files
        # land in a node-local cache when this node lacks the driver's directory.
        model_dir = os.fspath(model_dir)
        critic_dir = os.fspath(critic_dir) if critic_dir is not None else None
        self.cfg, self.rank, self.world_size, self.model_dir = cfg, rank, world_size, model_dir
        if cfg.threads_per_worker:
            torch.set_num_threads(cfg.threads_per_worker)
        deepspeed, backend = init_deepspeed(rank, world_size, master_addr, master_port, cfg.shm_comm)
        # learner.dtype=auto: bf16 where this worker's device runs it fast, fp32 elsewhere
        self.cfg = cfg = cfg.model_copy(update={"dtype": resolve_dtype(cfg.dtype, "cuda" if backend == "nccl" else "cpu")})
        self.deepspeed = deepspeed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed + 1)  # minibatch shuffling (same on every rank)

        def engine(model, lr, stage):
            return make_engine(deepspeed, model, cfg, lr, stage, cuda=backend == "nccl")

        policy = build_policy(model_dir, cfg)
        critic = build_critic(critic_dir or model_dir, cfg)
        self.pad_id = pad_id if pad_id is not None else (policy.config.pad_token_id or policy.config.eos_token_id or 0)
        if isinstance(self.pad_id, list):
            self.pad_id = self.pad_id[0]
        self.trainable_params = trainable_count(policy)
        self.critic_trainable_params = trainable_count(critic) if critic is not None else 0
        self.actor = engine(policy, cfg.lr, cfg.zero_stage)
        # Every tensor the worker makes lives where the models are (cuda:N under DeepSpeed on a GPU);
        # collectives run on the backend's device (NCCL reduces CUDA tensors only).
        self.device = self.actor.device
        self.comm_device = self.device if backend == "nccl" else torch.device("cpu")
        self.critic = engine(critic, cfg.critic_lr or cfg.lr, cfg.zero_stage) if critic is not None else None
        # The reference only serves the KL term: with kl_beta 0 it is never built (a whole model of memory);
        # under LoRA it is the actor with its adapters off (``_ref_logprobs``).
        self.ref = None if cfg.kl_beta == 0 or cfg.lora_rank else engine(load_policy(model_dir, cfg.dtype), None,
                                                                         3 if cfg.zero_stage == 3 else 0)
        if self.ref is not None:
            self.ref.eval()
        self._host_bufs: dict = {}  # export_weights' pinned host buffers on a GPU, reused push after push
        self.steps = 0        # optimizer steps
        self.iterations = 0   # train() calls

    # --- collectives ---------------------------------------------------------------------------------

    def _all_sum(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def _all_max(self, value: int) -> int:
        if self.world_size == 1:  # no collective: nothing to wait for (an NCCL one reads back from the GPU)
            return value
        t = torch.tensor([value], dtype=torch.long, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def _split(self, batch: Batch, rows: list[int]) -> list[list[int]]:
        """Length buckets of ``rows``, as many on every rank (ZeRO-3 forwards are collective)."""
        lengths = batch.rows().lengths
        count = self._all_max(bucket_count([lengths[r] for r in rows], self.cfg.micro_batch_tokens))
        return buckets(rows, lengths, count)

    # --- one PPO iteration ---------------------------------------------------------------------------

    @torch.no_grad()
    def _prepare(self, batch: Batch) -> dict[str, float]:
        """Reference logprobs, old values, rewards, advantages and returns into ``batch.extra``."""
        cfg = self.cfg
        b, t = batch.input_ids.shape
        ref_lp, values = torch.zeros(b, t, device=self.device), torch.zeros(b, t, device=self.device)
        old_lp = batch.old_logprobs.clone()
        groups = self._split(batch, list(range(b)))
        for rows in groups:
            mb = batch.take(rows, self.cfg.pad_multiple)
            n = mb.input_ids.shape[1]
            if self.critic is not None:
                values[rows, :n] = self.critic(mb.input_ids, self._mask(mb)).float()
            if cfg.old_logprobs == "recompute":
                old_lp[rows, :n] = self._logprobs(self.actor, mb)[0]
            if cfg.kl_beta > 0:
                ref_lp[rows, :n] = self._ref_logprobs(mb)
        if cfg.kl_beta == 0:
            ref_lp = old_lp  # no penalty: skip the reference forwards (kl_ref is then reported as 0)
        mask = batch.action_mask
        log_ratio = ppo.kl_penalty(old_lp, ref_lp, mask, "per_token")
        behaviour_gap = ppo.kl_penalty(batch.old_logprobs, old_lp, mask, "per_token")
        if self.critic is None:
            return self._prepare_critic_free(batch, old_lp, ref_lp, log_ratio, behaviour_gap, groups)
        if cfg.value_level == "turn":
            old_values = values.gather(1, batch.turn_ends.clamp(min=0))
            rewards = ppo.turn_rewards_shaped(batch.turn_rewards, batch.token_rewards, old_lp, ref_lp,
                                              batch.token_turn, cfg.kl_kind, cfg.kl_beta)
            adv, returns = ppo.turn_gae(rewards, old_values, batch.turn_mask, cfg.gamma, cfg.gae_lambda)
            vmask = batch.turn_mask
            if cfg.whiten_advantages:
                adv = ppo.masked_whiten(adv, vmask, all_sum=self._all_sum)
            token_adv = ppo.broadcast_turns(adv, batch.token_turn)
        else:
            # The value of the state before token p is the critic's output at p - 1.
            old_values = torch.cat([torch.zeros(b, 1, device=self.device), values[:, :-1]], dim=1)
            rewards = ppo.token_rewards_shaped(batch.turn_rewards, batch.turn_last, batch.token_rewards, old_lp,
                                               ref_lp, batch.token_turn, cfg.kl_kind, cfg.kl_beta)
            adv, returns = ppo.token_gae(rewards, old_values, mask, cfg.gamma, cfg.gae_lambda)
            vmask = mask
            if cfg.whiten_advantages:
                adv = ppo.masked_whiten(adv, vmask, all_sum=self._all_sum)
            token_adv = adv
        batch.extra.update(old_logprobs=old_lp, advantages=token_adv, old_values=old_values, returns=returns)
        ev = ppo.explained_variance(old_values, returns, vmask)
        n_act = mask.sum().item()
        sums = self._all_sum([ppo.masked_sum(log_ratio, mask).item(), n_act,
                              ppo.masked_sum(behaviour_gap, mask).item(), rewards.sum().item(), b,
                              0.0 if torch.isnan(ev) else ev.item(), 0.0 if torch.isnan(ev) else 1.0])
        stats = padding_stats(batch.rows().lengths, groups)
        out = {"kl_ref": sums[0] / max(sums[1], 1), "reward_mean": sums[3] / max(sums[4], 1),
               "value_explained_var": sums[5] / sums[6] if sums[6] else float("nan"),
               "padding_frac": stats["padding_frac"]}
        if cfg.old_logprobs == "recompute":  # how far the sampler's logprobs are from the learner's
            out["behaviour_logprob_gap"] = sums[2] / max(sums[1], 1)
        return out

    def _ref_logprobs(self, mb: Batch) -> torch.Tensor:
        if self.ref is not None:
            return self._logprobs(self.ref, mb)[0]
        with reference(self.actor.module):  # LoRA: the base network is the reference
            return self._logprobs(self.actor, mb)[0]

    def _logprobs(self, model, mb: Batch, entropy: str = "none"):
        return action_logprobs(model, mb.input_ids, self._mask(mb), mb.action_mask, entropy,
                               self.cfg.logprob_chunk_tokens, self.cfg.pad_multiple, sum(mb.rows().actions))

    def _mask(self, mb: Batch):
        """The attention mask of a micro-batch's forwards (``learner.padding_mask``)."""
        return forward_mask(mb.attention_mask, mb.rows().right_padded) if self.cfg.padding_mask == "auto" \
            else mb.attention_mask

    def _prepare_critic_free(self, batch: Batch, old_lp, ref_lp, log_ratio, behaviour_gap, groups) -> dict[str, float]:
        """grpo / rloo: every action token carries its episode's group advantage; the KL to the
        reference goes into the loss (``_minibatch``), not the reward."""
        if torch.isnan(batch.advantages).any():
            raise ValueError(f"learner.advantage={self.cfg.advantage} needs every sample's advantage "
                             "(assign_group_advantages on the whole rollout batch before it is split over workers)")
        mask = batch.action_mask
        token_adv = torch.where(mask, batch.advantages[:, None].expand_as(old_lp), torch.zeros((), device=self.device))
        batch.extra.update(old_logprobs=old_lp, advantages=token_adv, ref_logprobs=ref_lp)
        b = batch.size
        sums = self._all_sum([ppo.masked_sum(log_ratio, mask).item(), mask.sum().item(),
                              ppo.masked_sum(behaviour_gap, mask).item(), batch.turn_rewards.sum().item()
                              + batch.token_rewards.sum().item(), b, (batch.advantages != 0).sum().item()])
        out = {"kl_ref": sums[0] / max(sums[1], 1), "reward_mean": sums[3] / max(sums[4], 1),
               "nonzero_advantage_frac": sums[5] / max(sums[4], 1),
               "padding_frac": padding_stats(batch.rows().lengths, groups)["padding_frac"]}
        if self.cfg.old_logprobs == "recompute":
            out["behaviour_logprob_gap"] = sums[2] / max(sums[1], 1)
        return out

    def _minibatch(self, batch: Batch, rows: list[int], acc: dict) -> None:
        cfg = self.cfg
        mb = batch.take(rows, self.cfg.pad_multiple)
        turn = cfg.value_level == "turn"
        # Every count comes from the host (``RowInfo``) and every metric stays a device tensor until the
        # iteration ends: the micro-batch loop never waits for the GPU, which keeps it fed while the CPU
        # queues the next kernels.
        n_tok, n_seq, n_val = mb.rows().counts(turn)
        for group in self._split(mb, list(range(mb.size))):
            m = mb.take(group, self.cfg.pad_multiple)
            ent_mode = "grad" if cfg.entropy_coef > 0 else "detached"
            lp, ent = self._logprobs(self.actor, m, ent_mode)
            pl, pst = ppo.policy_loss(lp, m.extra["old_logprobs"], m.extra["advantages"], m.action_mask, cfg.clip_eps,
                                      cfg.loss_agg)
            # This micro-batch's share of the minibatch: its action tokens (token_mean) or its episodes (seq_mean).
            m_tok, m_seq, m_val = m.rows().counts(turn)
            w = m_tok / max(n_tok, 1) if cfg.loss_agg == "token_mean" else m_seq / max(n_seq, 1)
            ent_mean = ppo.masked_mean(ent, m.action_mask)
            loss = pl - cfg.entropy_coef * ent_mean if cfg.entropy_coef > 0 else pl
            if self.critic is None and cfg.kl_beta > 0:
                kl = ppo.kl_loss(lp, m.extra["ref_logprobs"], m.action_mask, cfg.loss_agg)
                loss = loss + cfg.kl_beta * kl
                _add(acc, "kl_loss", kl, w)
            self.actor.backward(loss * w, scale_wrt_gas=False)
            for k, x in (("policy_loss", pl), ("policy_clip_frac", pst["clip_frac"]), ("approx_kl", pst["approx_kl"]),
                         ("entropy", ent_mean)):
                _add(acc, k, x, w)
            if self.critic is None:
                continue
            v = self.critic(m.input_ids, self._mask(m)).float()
            v = v.gather(1, m.turn_ends.clamp(min=0)) if turn else torch.cat([torch.zeros_like(v[:, :1]), v[:, :-1]], 1)
            vmask = m.turn_mask if turn else m.action_mask
            vl, vst = ppo.value_loss(v, m.extra["old_values"], m.extra["returns"], vmask, cfg.value_clip_eps)
            wv = m_val / max(n_val, 1)
            self.critic.backward(vl * wv, scale_wrt_gas=False)
            _add(acc, "value_loss", vl, wv)
            _add(acc, "value_clip_frac", vst["clip_frac"], wv)
        self.actor.step()
        self.steps += 1
        _add(acc, "grad_norm", self.actor.get_global_grad_norm())
        if self.critic is not None:
            self.critic.step()
            _add(acc, "critic_grad_norm", self.critic.get_global_grad_norm())
        acc["minibatches"] += 1

    def train(self, samples: list[Sample], progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
        """One PPO iteration on this rank's share of a rollout batch; metrics averaged over ranks.
        ``progress(done, total)`` is called after each minibatch's optimizer step."""
        t0 = time.perf_counter()
        self.actor.train()
        if self.critic is not None:
            self.critic.train()
        elif any(s.advantage is None for s in samples):
            if self.world_size > 1:
                raise ValueError(f"learner.advantage={self.cfg.advantage} with {self.world_size} workers: assign "
                                 "group advantages on the whole batch first (LearnerGroup.train does)")
            assign_group_advantages(samples, self.cfg.advantage, self.cfg.negative_advantage_scale)
        batch = collate(samples, self.pad_id, self.cfg.pad_multiple).to(self.device)
        metrics = self._prepare(batch)
        per_rank = max(1, self.cfg.minibatch_size // self.world_size)
        acc: dict[str, float] = defaultdict(float)
        total = self.cfg.ppo_epochs * -(-batch.size // per_rank)
        for _ in range(self.cfg.ppo_epochs):
            perm = torch.randperm(batch.size, generator=self.gen).tolist()
            for start in range(0, batch.size, per_rank):
                self._minibatch(batch, perm[start:start + per_rank], acc)
                if progress is not None:
                    progress(int(acc["minibatches"]), total)
        n_mb = acc.pop("minibatches")
        names = sorted(acc)
        means = self._all_sum([float(acc[k]) / n_mb for k in names])  # the iteration's one read of the device
        metrics.update({k: v / self.world_size for k, v in zip(names, means)})
        wall = time.perf_counter() - t0
        batch.extra.clear()  # the per-token results of this batch: freed before the memory goes back
        rss = release_memory()
        tokens = self._all_sum([float(sum(batch.rows().lengths)) * self.cfg.ppo_epochs, wall, peak_rss_gib()])
        self.iterations += 1
        metrics.update(tokens_per_s=tokens[0] / (tokens[1] / self.world_size), step_s=wall, steps=self.steps,
                       iteration=self.iterations, lr=self.actor.get_lr()[0], trainable_params=self.trainable_params,
                       critic_trainable_params=self.critic_trainable_params, peak_rss_gib=peak_rss_gib(),
                       peak_rss_gib_all_workers=tokens[2], rss_gib=rss)
        return metrics

    # --- weights -------------------------------------------------------------------------------------

    def _whole(self, params: list):
        """A context in which ``params`` are whole on every rank: under ZeRO-3 a gather (collective:
        every rank must enter it), otherwise nothing to do."""
        if self.cfg.zero_stage == 3:
            return self.deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        return contextlib.nullcontext()

    def _policy_named(self) -> list[tuple[str, torch.Tensor]]:
        """The actor's parameters under the base model's names; under LoRA the merged network."""
        if self.cfg.lora_rank:
            return merged_named(self.actor.module)
        return list(self.actor.module.named_parameters())

    def export_weights(self, sink: Callable[[dict[str, np.ndarray]], object], dtype: str = "same"):
        """Hand the actor's full weights (HF names -> numpy arrays) to ``sink`` on rank 0 and return
        what it returns (None on other ranks). Arrays are views of the parameters where possible:
        ``sink`` must copy them out (``ray.put`` does) before returning. Under ZeRO-3 every rank must
        call this (the gather is collective). bfloat16 arrays travel as uint16 bit patterns. Under
        LoRA the merged network travels (engines load plain weights)."""
        with self._whole(list(self.actor.module.parameters())):
            if self.rank != 0:
                return None
            named = self._policy_named()
            if dtype == "bfloat16":
                named = [(n, p.to(torch.bfloat16)) for n, p in named]
            if self.device.type == "cuda":
                # One pinned host buffer per dtype, every parameter copied into its slice without a
                # sync, one sync at the end: the bus speed, not one blocking .cpu() per parameter.
                self._host_bufs, named = host_copy(named, self._host_bufs)
            out = sink({n: to_numpy(t) for n, t in named})
            copied = self.cfg.lora_rank or dtype == "bfloat16"
            del named
            if copied and self.device.type == "cpu":
                # A merged or cast copy of the network on the heap: its pages go back once it is in
                # the sink (no garbage collection: refcounts free it; a full collection costs more
                # than the copy). Views of the parameters (the plain push) free nothing.
                release_memory(collect=False)
            return out

    def export_adapter(self, sink: Callable[[dict[str, np.ndarray]], object]):
        """Hand the LoRA adapter (peft's files as bytes, ``lora.adapter_files``) to ``sink`` on rank 0 and
        return what it returns (None on other ranks): the push to engines that serve LoRA."""
        if not self.cfg.lora_rank:
            raise ValueError("export_adapter: the policy has no adapter (learner.lora_rank=0)")
        return sink(adapter_files(self.actor.module)) if self.rank == 0 else None

    def save_policy(self, location: str | Path) -> str | None:
        """Write the actor as a HF model dir (``learner.model.save_policy_dir``) at ``location`` (a path
        or a ``learner.storage`` URI). Every rank must call it (ZeRO-3 gathers); rank 0 writes and
        returns the location. Under LoRA the dir holds the merged network, and ``adapter/`` the adapter
        alone (peft format)."""
        with self._whole(list(self.actor.module.parameters())):
            if self.rank != 0:
                return None
            storage = Storage(str(location))
            with storage.writing() as out:
                save_policy_dir(self._policy_named(), self.model_dir, out)
                if self.cfg.lora_rank:
                    save_adapter(self.actor.module, out / "adapter")
            return storage.location

    def state_digest(self) -> dict[str, float]:
        """Sum and sum of squares of actor and critic parameters on this rank (tests compare ranks)."""
        out = {}
        for name, eng in self._trained():
            params = [p for p in eng.module.parameters()]
            with self._whole(params):
                out[name] = float(sum(p.detach().double().sum() for p in params))
                out[name + "_sq"] = float(sum((p.detach().double() ** 2).sum() for p in params))
        return out

    def _trained(self) -> list[tuple[str, Any]]:
        return [("actor", self.actor)] + ([("critic", self.critic)] if self.critic is not None else [])

    # --- checkpoints ---------------------------------------------------------------------------------

    def save(self, location: str | Path) -> str:
        """Checkpoint actor and critic (``learner.checkpoint``) at ``location`` (a path or a
        ``learner.storage`` URI); every rank must call it and writes its own part from its own node.
        Returns the tag; the older checkpoints stay until ``prune``."""
        storage = Storage(str(location))
        with storage.writing() as local:
            tag = checkpoint.save(local, self._trained(), self.rank, self.gen,
                                  {"steps": self.steps, "iterations": self.iterations})
        if not storage.local:
            dist.barrier()  # every rank's part is uploaded when any rank returns
        return tag

    def prune(self, location: str | Path, tag: str) -> None:
        """Drop every checkpoint at ``location`` but ``tag`` (one rank calls it, once ``tag`` is complete
        and recorded: a rank lost while saving leaves the previous checkpoint whole)."""
        checkpoint.prune(Storage(str(location)), [name for name, _ in self._trained()], tag)

    def load(self, location: str | Path, tag: str | None = None) -> None:
        """Resume from ``save``: same weights, optimizer moments, lr schedule, step and RNG states."""
        with Storage(str(location)).reading() as local:
            client = checkpoint.load(local, self._trained(), self.rank, self.gen, tag)
        self.steps, self.iterations = client["steps"], client["iterations"]


def _add(acc: dict, key: str, x, w: float = 1.0) -> None:
    """``acc[key] += x * w`` in float64, ``x`` a tensor (kept on its device: nothing waits for it), a
    number, or None (as 0: DeepSpeed's grad norm before any step)."""
    acc[key] = acc[key] + (x.detach().double() if isinstance(x, torch.Tensor) else float(x or 0.0)) * w
