"""LoRA on the policy (``learner.lora_rank > 0``), built with peft.

Only the adapters train, so the optimizer holds state for them alone. The reference policy of the
KL term is the same network with its adapters switched off (``reference()``): no second copy of the
model. Everything that leaves the learner (the weights pushed to engines, the saved policy) is the
*merged* network under the base model's own parameter names (``merged_named``), so engines and
``from_pretrained`` see a plain model (a value network with adapters, ``add_value_adapters``, is saved
merged too); ``save_adapter`` also writes the adapter in peft's format,
and ``adapter_files`` gives that dir's files as bytes (the push to engines that serve LoRA).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

ADAPTER = "default"  # peft's name of the one adapter


def add_adapters(model: nn.Module, rank: int, alpha: float | None, dropout: float, targets: list[str]) -> nn.Module:
    """``model`` wrapped with LoRA adapters of ``rank`` on ``targets`` (module names; empty = every
    linear layer of the blocks); its own weights are frozen. A target that names no linear module
    is an error listing the ones the model has."""
    from peft import LoraConfig, get_peft_model

    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
    unknown = [t for t in targets if t not in linear]
    if unknown:
        raise ValueError(f"learner.lora_targets: {unknown} name no linear module of {type(model).__name__}; "
                         f"its linear modules: {', '.join(linear)}")
    cfg = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=dropout,
                     target_modules=list(targets) or "all-linear")
    return get_peft_model(model, cfg)


def add_value_adapters(model: nn.Module, rank: int, alpha: float | None, dropout: float, targets: list[str]) -> nn.Module:
    """LoRA on a value network's backbone (``learner.model.ValueModel``: the critic, the PRM): the
    adapters and the value head train, the backbone's own weights are frozen. Returns ``model``."""
    model.backbone = add_adapters(model.backbone, rank, alpha, dropout, targets)
    return model


def is_lora(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def reference(model: nn.Module):
    """A context in which ``model`` (a peft model) computes its base network: the KL reference."""
    return model.disable_adapter() if is_lora(model) else contextlib.nullcontext()


@torch.no_grad()
def merged_named(model: nn.Module) -> list[tuple[str, Tensor]]:
    """The merged network's parameters under the base model's names: W + scale * B @ A for each
    adapted layer (summed in fp32, returned in W's dtype), every other parameter as it is. The
    model itself is not modified."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapted = {f"{name}.base_layer.weight": m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    out = []
    for name, p in base.named_parameters():
        if ".lora_" in name:
            continue
        t = p.detach()
        if name in adapted:
            t = (t.float() + adapted[name].get_delta_weight(ADAPTER).float()).to(t.dtype)
        out.append((name.replace(".base_layer.", "."), t))
    return out


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_adapter(model: nn.Module, out_dir: str | Path) -> str:
    """The adapter alone in peft's format (``PeftModel.from_pretrained(base, out_dir)`` loads it)."""
    model.save_pretrained(str(out_dir))
    return str(out_dir)


def check_adapter_dir(adapter_dir: str | Path) -> Path:
    """``adapter_dir`` as a Path when it holds a peft adapter's config and weights; else an error naming
    the dir and the missing files."""
    from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME

    d = Path(adapter_dir)
    missing = [n for n in (CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME) if not (d / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{d}: not a peft LoRA adapter dir (no {', '.join(missing)})")
    return d


def adapter_files(model: nn.Module) -> dict[str, np.ndarray]:
    """The adapter in peft's format as ``{file name: bytes}`` (uint8 arrays: zero-copy through Ray's
    object store): its config and its weights, what vLLM's ``LoRARequest`` loads from a dir."""
    from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME

    with tempfile.TemporaryDirectory(prefix="proctor-adapter-") as tmp:
        save_adapter(model, tmp)
        return {name: np.fromfile(Path(tmp) / name, dtype=np.uint8) for name in (CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME)}
