"""The learner's networks: the policy (any HF causal LM), and a critic = LM backbone + value head.

A critic or PRM directory is a HF model directory plus ``value_head.safetensors`` (``weight``
[1, hidden], ``bias`` [1]); without that file the head starts at zero (V = 0 everywhere), so a
critic initialised from the policy starts neutral. A PRM saved in this format initialises the
critic (PSGPO).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from proctor.learner.batch import round_up

VALUE_HEAD = "value_head.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str, device: str) -> str:
    """``learner.dtype=auto`` on ``device`` ("cpu" or "cuda"): bfloat16 where it runs fast (a CPU
    with AMX tiles: ~5x fp32's matmul throughput; a CUDA GPU with bf16), float32 elsewhere."""
    if dtype != "auto":
        return dtype
    if device == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_amx() else "float32"


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX bf16 tiles (Linux's /proc/cpuinfo flag ``amx_bf16``)."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def load_policy(model_dir: str | Path, dtype: str = "float32") -> nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=DTYPES[dtype])


def freeze(model: nn.Module, patterns: list[str], strict: bool = True) -> int:
    """Stop training the parameters whose name contains one of ``patterns`` (``learner.freeze``);
    returns how many tensors were frozen. A pattern that matches nothing is an error naming the
    model's modules, so a typo never silently trains everything."""
    names = [n for n, _ in model.named_parameters()]
    for pat in patterns if strict else ():
        if not any(pat in n for n in names):
            modules = sorted({".".join(p for p in n.split(".")[:-1] if not p.isdigit()) for n in names})
            raise ValueError(f"learner.freeze: {pat!r} matches no parameter of {type(model).__name__}; "
                             f"its modules: {', '.join(modules)}")
    frozen = 0
    for n, p in model.named_parameters():
        if any(pat in n for pat in patterns):
            p.requires_grad_(False)
            frozen += 1
    return frozen


def save_policy_dir(named: list[tuple[str, Tensor]], base_dir: str | Path, out_dir: str | Path) -> str:
    """A HF model dir at ``out_dir``: ``named`` parameters as safetensors plus the base model's
    config, generation config, tokenizer and chat template, so that ``from_pretrained``, vLLM and
    ``proctor eval --model`` load it (tied weights are stored once, as HF does)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in Path(base_dir).iterdir():
        if f.is_file() and f.suffix not in (".safetensors", ".bin", ".pt", ".gguf") and f.name != "model.safetensors.index.json":
            shutil.copy2(f, out / f.name)
    save_file({n: p.detach().cpu().contiguous() for n, p in named}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    return str(out)


def to_numpy(t: Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor (bfloat16, which numpy lacks, as its uint16 bit patterns)."""
    t = t.detach()
    return t.view(torch.uint16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def host_copy(named: list[tuple[str, Tensor]], bufs: dict | None = None,
              pin: bool | None = None) -> tuple[dict, list[tuple[str, Tensor]]]:
    """Copy device tensors into one flat host buffer per dtype (pinned when CUDA is there), each
    tensor into its own slice without a sync, then one sync. Returns the buffers (pass them back to
    reuse them: same sizes, no new pinned allocation) and the tensors as views into them."""
    pin = torch.cuda.is_available() if pin is None else pin
    sizes: dict[torch.dtype, int] = {}
    for _, t in named:
        sizes[t.dtype] = sizes.get(t.dtype, 0) + t.numel()
    bufs = dict(bufs or {})
    for dt, n in sizes.items():
        if dt not in bufs or bufs[dt].numel() != n:
            bufs[dt] = torch.empty(n, dtype=dt, pin_memory=pin)
    offsets = dict.fromkeys(sizes, 0)
    out = []
    for name, t in named:
        o, n = offsets[t.dtype], t.numel()
        view = bufs[t.dtype][o:o + n].view(t.shape)
        view.copy_(t.detach(), non_blocking=pin)
        offsets[t.dtype] = o + n
        out.append((name, view))
    if pin:
        torch.cuda.synchronize()
    return bufs, out


class ValueModel(nn.Module):
    """Per-token scalar values: ``value_head(backbone(ids).last_hidden_state)`` -> [B, T]."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.value_head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, dtype: str = "float32", **kwargs):
        """The backbone of a HF dir and its ``value_head.safetensors`` (a zero head without one);
        ``kwargs`` go to the constructor of ``cls`` (a subclass such as the PRM)."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        backbone = AutoModel.from_pretrained(str(model_dir), dtype=DTYPES[dtype])
        model = cls(backbone, **kwargs).to(DTYPES[dtype])
        head = Path(model_dir) / VALUE_HEAD
        if head.exists():
            state = load_file(str(head))
            missing = {"weight", "bias"} - set(state)
            if missing:
                raise ValueError(f"{head}: missing tensors {sorted(missing)} (need weight [1, hidden] and bias [1])")
            model.value_head.load_state_dict({k: v.to(DTYPES[dtype]) for k, v in state.items()})
        return model

    def save_pretrained(self, out_dir: str | Path) -> None:
        from safetensors.torch import save_file

        from proctor.learner.lora import is_lora, merged_named

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        if is_lora(self.backbone):  # adapters (``lora.add_value_adapters``): the merged backbone, a plain HF dir
            self.backbone.get_base_model().save_pretrained(str(out_dir), state_dict=dict(merged_named(self.backbone)))
        else:
            self.backbone.save_pretrained(str(out_dir))
        save_file({k: v.detach().contiguous() for k, v in self.value_head.state_dict().items()},
                  str(Path(out_dir) / VALUE_HEAD))

    def gradient_checkpointing_enable(self) -> None:
        self.backbone.gradient_checkpointing_enable()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.value_head(hidden).squeeze(-1).float()


def action_logprobs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, action_mask: Tensor,
                    entropy: str = "none", chunk_tokens: int = 1024, multiple: int = 1,
                    n_actions: int | None = None) -> tuple[Tensor, Tensor | None]:
    """Log-probability of each action token under ``model`` (and the policy entropy there), [B, T],
    0 off-action. ``entropy``: "none", "detached" (a metric) or "grad" (in the loss).

    ``chunk_tokens > 0``: the network runs without its LM head; the hidden states of the positions
    that predict an action token (those alone, no padding or prompt) go through the head
    ``chunk_tokens`` at a time; the first chunk's logits are kept for the backward and every later
    chunk's are recomputed there (checkpointed), so at most two chunks of [tokens, V] fp32 logits
    exist at a time, never the [B, T, V] ones. A chunk's rows are padded to a multiple of ``multiple``
    (zeros, their results dropped): the head's matmul then comes in few shapes (``batch.round_up``).
    ``chunk_tokens = 0``: the head runs on every column that predicts an action token of some row
    (``logits_to_keep``) and the [B, C, V] logits are kept for the backward.
    ``n_actions``: the number of action tokens, when the caller knows it (``RowInfo``): the positions
    are then found without reading the count back from the device (a GPU would stall the CPU there)."""
    lm = causal_lm(model)
    if chunk_tokens <= 0 or not _plain_head(lm):
        return _logprobs_full(model, input_ids, attention_mask, action_mask, entropy)
    captured = []
    hook = lm.get_decoder().register_forward_hook(lambda _m, _a, out: captured.append(out[0]))
    try:  # the whole network runs (engine and ZeRO hooks included); its head sees no position
        model(input_ids=input_ids, attention_mask=attention_mask,
              logits_to_keep=torch.zeros(0, dtype=torch.long, device=input_ids.device))
    finally:
        hook.remove()
    shifted = action_mask[:, 1:]                                       # position p predicts token p + 1
    rows, cols = (shifted.nonzero(as_tuple=True) if n_actions is None
                  else torch.nonzero_static(shifted, size=n_actions).unbind(1))
    hidden, targets = captured[0][rows, cols], input_ids[rows, cols + 1]
    head, want = lm.get_output_embeddings(), entropy != "none"
    grad = torch.is_grad_enabled() and hidden.requires_grad
    parts = []
    for s in range(0, len(targets), chunk_tokens):
        args = (head, hidden[s:s + chunk_tokens], targets[s:s + chunk_tokens], want, entropy == "grad", multiple)
        # The first chunk keeps its logits for the backward, later ones are recomputed there: one
        # chunk's memory kept at most, and no recompute at all when the action tokens fit in one.
        parts.append(checkpoint(_head_logprobs, *args, use_reentrant=False) if grad and s else _head_logprobs(*args))
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    picked = torch.cat([p[0] for p in parts]) if parts else out.new_zeros(0)
    out = out.index_put((rows, cols + 1), picked)
    if not want:
        return out, None
    ent = torch.cat([p[1] for p in parts]) if parts else out.new_zeros(0)
    return out, torch.zeros_like(out).index_put((rows, cols + 1), ent)


def causal_lm(model: nn.Module) -> nn.Module:
    """The HF causal LM inside a DeepSpeed engine and/or a peft wrapper."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _plain_head(lm: nn.Module) -> bool:
    """Whether the logits are just ``get_output_embeddings()(hidden)`` (no soft-capping or scale)."""
    c = getattr(lm, "config", None)
    return (hasattr(lm, "get_decoder") and isinstance(lm.get_output_embeddings(), nn.Linear)
            and not getattr(c, "final_logit_softcapping", None) and getattr(c, "logit_scale", 1.0) in (None, 1.0))


def _head_logprobs(head: nn.Module, hidden: Tensor, targets: Tensor, want_entropy: bool, entropy_grad: bool,
                   multiple: int = 1):
    n = len(targets)
    if pad := round_up(n, multiple) - n:
        hidden = torch.cat([hidden, hidden.new_zeros(pad, hidden.shape[1])])
        targets = torch.cat([targets, targets.new_zeros(pad)])
    logp = torch.log_softmax(head(hidden).float(), dim=-1)           # [n + pad, V], one chunk
    picked = logp.gather(-1, targets[:, None]).squeeze(-1)[:n]
    if not want_entropy:
        return picked, None
    lp = logp if entropy_grad else logp.detach()
    return picked, -(lp.exp() * lp).sum(-1)[:n]


def _logprobs_full(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, action_mask: Tensor,
                   entropy: str) -> tuple[Tensor, Tensor | None]:
    b, t = input_ids.shape
    cols = action_mask[:, 1:].any(0).nonzero().squeeze(-1)        # positions p predicting token p + 1
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=cols).logits.float()
    logp_all = torch.log_softmax(logits, dim=-1)                    # [B, C, V]
    targets = input_ids[:, cols + 1]
    picked = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    out = torch.zeros((b, t), dtype=picked.dtype, device=picked.device)
    out[:, cols + 1] = picked
    out = torch.where(action_mask, out, torch.zeros_like(out))
    if entropy == "none":
        return out, None
    with torch.set_grad_enabled(entropy == "grad" and torch.is_grad_enabled()):
        lp = logp_all if entropy == "grad" else logp_all.detach()
        ent = -(lp.exp() * lp).sum(-1)
    entropy = torch.zeros_like(out)
    entropy[:, cols + 1] = ent
    return out, torch.where(action_mask, entropy, torch.zeros_like(entropy))
