"""Model resolution: the embedded GGUF becomes a safetensors dir once; HF dirs pass through."""

import json
import time

import pytest

from proctor.cluster.model import EMBEDDED, ModelError, embedded_gguf, resolve


def test_hf_dir_is_used_as_is(tiny_model_dir):
    assert resolve(str(tiny_model_dir)) == tiny_model_dir


def test_bad_model_paths_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="does not exist"):
        resolve(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a HF model directory"):
        resolve(str(tmp_path / "empty"))


def test_unknown_hub_name_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="could not fetch model 'nobody/no-such-model'"):
        resolve("nobody/no-such-model")


@pytest.mark.slow
def test_embedded_model_prepares_once_and_matches_the_gguf(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    path = resolve(EMBEDDED, cache_dir=tmp_path, log=lambda *a: None)
    first = time.perf_counter() - t0
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config, "vLLM refuses a gguf quantization_config"
    assert config["architectures"] == ["LlamaForCausalLM"]  # tools that build from config.json need it
    assert (path / "model.safetensors").is_file()

    # a dir prepared before architectures was written gets it on the next resolve
    del config["architectures"]
    (path / "config.json").write_text(json.dumps(config))
    resolve(EMBEDDED, cache_dir=tmp_path, log=lambda *a: None)
    assert json.loads((path / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]

    t0 = time.perf_counter()
    assert resolve(EMBEDDED, cache_dir=tmp_path) == path
    assert time.perf_counter() - t0 < first / 10, "second call must reuse the prepared dir"

    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template and "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    prepared = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert prepared.config.tie_word_embeddings
    gguf = embedded_gguf()
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    ids = tok("def fibonacci(n):", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(prepared(ids).logits, reference(ids).logits, rtol=0, atol=1e-5)
    out = prepared.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 8
