"""Weight averaging of LoRA runs: a model soup (Wortsman et al. 2022; for RL fine-tuning, WARP,
Ramé et al. 2024). Each adapter's weight delta ``scale * B @ A`` (as peft merges it) is averaged in
fp32 and merged into the base network once, so the soup of K adapters is base + mean of their
deltas: the direction the runs share keeps its length, the part each run drew by chance shrinks.

    soup([run_a/policy/adapter, run_b/policy/adapter], base_dir, out_dir)   # a HF model dir
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft.utils import CONFIG_NAME as ADAPTER_CONFIG
from peft.utils import SAFETENSORS_WEIGHTS_NAME as ADAPTER_WEIGHTS
from safetensors.torch import load_file
from torch import Tensor

from proctor.learner.lora import check_adapter_dir
from proctor.learner.model import DTYPES, save_policy_dir

PREFIX = "base_model.model."  # peft's prefix of the wrapped model's parameter names


def read_deltas(adapter_dir: str | Path) -> dict[str, Tensor]:
    """One peft LoRA adapter's weight deltas, fp32, under the base model's parameter names."""
    d = check_adapter_dir(adapter_dir)
    cfg = json.loads((d / ADAPTER_CONFIG).read_text())
    if cfg.get("peft_type") != "LORA" or cfg.get("use_dora") or cfg.get("use_rslora") or cfg.get("fan_in_fan_out"):
        raise ValueError(f"{d / ADAPTER_CONFIG}: only plain LoRA adapters average here (peft_type LORA, "
                         "no DoRA, no rsLoRA, no fan_in_fan_out)")
    scale = cfg["lora_alpha"] / cfg["r"]
    weights = load_file(str(d / ADAPTER_WEIGHTS))
    deltas = {}
    for key, a in weights.items():
        if ".lora_A." not in key:
            continue
        b = weights.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            raise ValueError(f"{d / ADAPTER_WEIGHTS}: {key} has no lora_B partner")
        # peft's merge: B @ A in the adapter's dtype, times the scale; summed in fp32 with the weight
        deltas[key.removeprefix(PREFIX).replace(".lora_A.weight", ".weight")] = ((b @ a) * scale).float()
    if not deltas:
        raise ValueError(f"{d / ADAPTER_WEIGHTS}: no LoRA weights (lora_A / lora_B) in it")
    return deltas


def mean_deltas(adapter_dirs: list[str | Path]) -> dict[str, Tensor]:
    """The mean of the adapters' deltas per weight (a weight one adapter leaves alone adds 0)."""
    if not adapter_dirs:
        raise ValueError("a soup needs at least one adapter")
    total: dict[str, Tensor] = {}
    for d in adapter_dirs:
        for name, delta in read_deltas(d).items():
            total[name] = total[name] + delta if name in total else delta
    return {name: t / len(adapter_dirs) for name, t in total.items()}


@torch.no_grad()
def soup(adapter_dirs: list[str | Path], base_dir: str | Path, out_dir: str | Path, dtype: str = "bfloat16") -> str:
    """A HF model dir at ``out_dir``: the base model in ``base_dir`` (its ``model.safetensors``) with
    the mean delta of ``adapter_dirs`` merged in, stored in ``dtype`` (the learner's, as a run's
    ``policy/`` is). Returns ``out_dir``."""
    weights = Path(base_dir) / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: the base model of a soup must be one safetensors file")
    deltas = mean_deltas(adapter_dirs)
    named = []
    for name, t in load_file(str(weights)).items():
        t = t.to(DTYPES[dtype])
        if name in deltas:
            delta = deltas.pop(name)
            if delta.shape != t.shape:
                raise ValueError(f"{adapter_dirs[0]}: {name} is {tuple(delta.shape)} in the adapters but "
                                 f"{tuple(t.shape)} in {weights}: they were trained on another model")
            t = (t.float() + delta).to(t.dtype)
        named.append((name, t))
    if deltas:
        raise ValueError(f"{adapter_dirs[0]}: adapter weights for {', '.join(sorted(deltas)[:3])} are not in {weights}")
    return save_policy_dir(named, base_dir, out_dir)
