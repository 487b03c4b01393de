import os
from pathlib import Path

import pytest

import proctor.cluster.ray_local  # noqa: F401  (before anything imports ray)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Datasets' cache in a private dir; the prepared embedded model is shared via PROCTOR_CACHE."""
    os.environ.setdefault("PROCTOR_CACHE", str(tmp_path_factory.mktemp("proctor-cache")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def sandbox():
    """One sandbox for the session: a fork server as root (CI), per-run bwrap otherwise."""
    from proctor.sandbox_pool.runner import Sandbox

    with Sandbox("auto", slots=2) as sb:
        yield sb


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-init 2-layer Llama (hidden 128, head_dim 64: the CPU attention kernels need >= 32) with a real chat tokenizer, saved as a HF dir."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from proctor.cluster.model import embedded_gguf

    gguf = embedded_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def v16_model_dir(tmp_path_factory):
    """A 16-token Llama: small enough that 'say token 5' is learnable in a few PPO iterations."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=16, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                      tie_word_embeddings=True, bos_token_id=0, eos_token_id=1)
    out = tmp_path_factory.mktemp("v16")
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A private local Ray (loopback only) for the session."""
    from proctor.cluster.ray_local import init_ray

    ray = init_ray(num_cpus=2, tmp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def start_up_stand_ins(ray_local):
    """Actors for start-up tests (``sandbox_pool.starting``), each answering ``info`` and ``stats``:
    ``dies`` (its worker process ends in the constructor, as in a crash), ``fails`` (its constructor
    raises ``RuntimeError("set-up failed")``) and ``starts``."""
    from types import SimpleNamespace

    class Probe:
        def info(self):
            return {}

        def stats(self):
            return {"version": 0}

    class Dies(Probe):
        def __init__(self):
            os._exit(1)  # not an error raised by the set-up: the process is gone

    class Fails(Probe):
        def __init__(self):
            raise RuntimeError("set-up failed")

    remote = ray_local.remote(num_cpus=0)
    return SimpleNamespace(dies=remote(Dies), fails=remote(Fails), starts=remote(Probe))
