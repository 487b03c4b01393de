"""DeepSpeed set-up of the learner's engines: the process-group environment and one engine's config."""

from __future__ import annotations

import os
import socket

import torch

from proctor.learner.config import LearnerConfig


def set_dist_env(rank: int, world_size: int, master_addr: str, master_port: int) -> None:
    # DeepSpeed falls back to MPI discovery unless all five are set.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR=master_addr,
                      MASTER_PORT=str(master_port),
                      LOCAL_RANK="0" if torch.cuda.is_available() else str(rank))


def init_deepspeed(rank: int = 0, world_size: int = 1, master_addr: str = "127.0.0.1", master_port: int = 0,
                   shm_comm: bool = False):
    """Join (or, alone, form) the torch.distributed group through DeepSpeed and return the
    ``deepspeed`` module and the backend: nccl with CUDA, gloo on CPU. ``master_port`` 0 picks a free
    port (world size 1 only). The learner workers and the PRM trainer both start here."""
    if not torch.distributed.is_initialized():
        if not master_port:
            with socket.socket() as s:
                s.bind((master_addr, 0))
                master_port = s.getsockname()[1]
        set_dist_env(rank, world_size, master_addr, master_port)
    # DeepSpeed JIT-builds C++ ops on first use: build them once into a cache that outlives runs.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(
        os.environ.get("PROCTOR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "proctor"),
        "torch_extensions"))
    import deepspeed

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "gloo" and (world_size == 1 or not shm_comm):
        # Nothing to reduce (or asked not to): skip the shared-memory allreduce op, whose first use
        # is a one-minute C++ build.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend=backend)
    return deepspeed, backend


def ds_config(cfg: LearnerConfig, lr: float | None, stage: int, cuda: bool = False) -> dict:
    """DeepSpeed config of one engine (``lr`` None: an inference-only engine, no optimizer); ``cuda``:
    the engine's model is on a CUDA device."""
    conf = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        # We decide where the accumulation boundary is (micro-batch counts vary per minibatch).
        "managed_gradient_accumulation": False,
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": cfg.dtype == "bfloat16"},
        "steps_per_print": 1 << 30,
    }
    if lr is not None:
        conf["gradient_clipping"] = cfg.grad_clip
        # torch's AdamW: no JIT-built optimizer op (DeepSpeed's CPU Adam build takes minutes); on a
        # GPU its fused kernel (one launch for all parameters, as transformers' Trainer defaults to).
        conf["optimizer"] = {"type": "AdamW", "params": {"lr": lr, "weight_decay": cfg.weight_decay,
                                                        "betas": [0.9, 0.95], "torch_adam": True,
                                                        **({"fused": True} if cuda else {})}}
    return conf


def make_engine(deepspeed, model, cfg: LearnerConfig, lr: float | None, stage: int, cuda: bool = False):
    """One DeepSpeed engine around ``model``: trained with AdamW at ``lr`` after a linear warm-up of
    ``cfg.warmup_steps`` steps, or (``lr`` None) frozen, for inference only."""
    if lr is None:
        model.requires_grad_(False)
    warmup = cfg.warmup_steps
    sched = None if lr is None else (lambda opt: torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / (warmup + 1))))
    params = [p for p in model.parameters() if p.requires_grad] if lr is not None else None
    eng, *_ = deepspeed.initialize(model=model, model_parameters=params, lr_scheduler=sched,
                                   config=ds_config(cfg, lr, stage, cuda=cuda))
    return eng
