"""DeepSpeed set-up of the learner's engines: the process-group environment and one engine's config."""

from __future__ import annotations

import os

import torch

from learner.config import LearnerConfig


def set_dist_env(rank: int, world_size: int, master_addr: str, master_port: int) -> None:
    # DeepSpeed falls back to MPI discovery unless all five are set.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR=master_addr,
                      MASTER_PORT=str(master_port),
                      LOCAL_RANK="0" if torch.cuda.is_available() else str(rank))


def ds_config(cfg: LearnerConfig, lr: float | None, stage: int) -> dict:
    """DeepSpeed config of one engine (``lr`` None: an inference-only engine, no optimizer)."""
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
        # torch's AdamW: no JIT-built optimizer op (DeepSpeed's CPU Adam build takes minutes).
        conf["optimizer"] = {"type": "AdamW", "params": {"lr": lr, "weight_decay": cfg.weight_decay,
                                                        "betas": [0.9, 0.95], "torch_adam": True}}
    return conf
