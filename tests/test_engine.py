"""The vLLM engine against HF transformers on a tiny model: same greedy tokens, same logprobs, and
weight updates that take effect (with a new version stamp)."""

import asyncio

import pytest
import torch

from proctor.rollout.config import RolloutConfig
from proctor.rollout.types import SamplingSpec

CFG = RolloutConfig(max_model_len=1024, kv_cache_gib=1)
PROMPTS = ["Write a Python function that adds two numbers.", "def fib(n):", "Sort a list in Python."]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from proctor.rollout.engine import Engine

    e = Engine(str(tiny_model_dir), CFG)
    yield e
    e.close()


def _ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def _hf(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _hf_logprobs(model, prompt, gen):
    with torch.no_grad():
        logits = model(torch.tensor([prompt + gen])).logits[0]
    logp = torch.log_softmax(logits.double(), -1)
    return [logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(gen)]


def test_greedy_tokens_and_logprobs_match_hf(engine, tiny_model_dir):
    model = _hf(tiny_model_dir)
    for text in PROMPTS:
        prompt = _ids(engine.tokenizer, text)
        gen = asyncio.run(engine.generate(prompt, SamplingSpec(temperature=0.0, max_tokens=24)))[0]
        with torch.no_grad():
            hf = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                                pad_token_id=engine.tokenizer.eos_token_id)[0, len(prompt):].tolist()
        assert gen.token_ids == hf[: len(gen.token_ids)], text
        assert gen.logprobs == pytest.approx(_hf_logprobs(model, prompt, gen.token_ids), abs=1e-4)


def test_sampled_logprobs_are_the_behaviour_policy(engine, tiny_model_dir):
    model = _hf(tiny_model_dir)
    prompt = _ids(engine.tokenizer, PROMPTS[0])

    async def sample():
        return await asyncio.gather(*[engine.generate(prompt, SamplingSpec(temperature=1.0, max_tokens=16, seed=s))
                                      for s in range(4)])

    gens = [g[0] for g in asyncio.run(sample())]
    assert len({tuple(g.token_ids) for g in gens}) > 1, "different seeds should sample different tokens"
    for g in gens:
        assert g.logprobs == pytest.approx(_hf_logprobs(model, prompt, g.token_ids), abs=1e-4)


def test_n_samples_in_one_request(engine):
    prompt = _ids(engine.tokenizer, PROMPTS[1])
    gens = asyncio.run(engine.generate(prompt, SamplingSpec(n=3, temperature=1.0, max_tokens=8, seed=1)))
    assert len(gens) == 3 and all(len(g.token_ids) == len(g.logprobs) for g in gens)


def test_update_weights_switches_model_and_version(engine, tiny_model_dir, tmp_path):
    from safetensors.numpy import load_file
    from transformers import AutoConfig, LlamaForCausalLM

    torch.manual_seed(123)
    other = LlamaForCausalLM(AutoConfig.from_pretrained(tiny_model_dir)).to(torch.float32)
    other.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))  # numpy, as from Ray's object store
    prompt = _ids(engine.tokenizer, PROMPTS[2])
    spec = SamplingSpec(temperature=0.0, max_tokens=16)
    before = asyncio.run(engine.generate(prompt, spec))[0]
    asyncio.run(engine.update_weights(state, version=7))
    after = asyncio.run(engine.generate(prompt, spec))[0]
    with torch.no_grad():
        hf = other.eval().generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False,
                                   pad_token_id=engine.tokenizer.eos_token_id)[0, len(prompt):].tolist()
    assert after.token_ids == hf[: len(after.token_ids)]
    assert after.token_ids != before.token_ids
    assert (before.version, after.version) == (0, 7)
    # and back: the original weights restore the original output
    asyncio.run(engine.update_weights(load_file(str(tiny_model_dir / "model.safetensors")), version=8))
    assert asyncio.run(engine.generate(prompt, spec))[0].token_ids == before.token_ids


def test_bad_request_fails_alone(engine):
    prompt = _ids(engine.tokenizer, PROMPTS[0])

    async def run():
        bad = engine.generate([10**9], SamplingSpec(max_tokens=4))
        good = engine.generate(prompt, SamplingSpec(temperature=0.0, max_tokens=4))
        return await asyncio.gather(bad, good, return_exceptions=True)

    bad, good = asyncio.run(run())
    assert isinstance(bad, Exception)
    assert len(good[0].token_ids) == 4


def test_many_long_seeded_prompts_at_once(engine):
    """More prompt tokens than one step's budget, every request seeded: on CPU a prompt cut across
    steps used to kill the engine ("CPU Generator does not use offset") and hang every caller."""
    async def run():
        reqs = [engine.generate(list(range(100 + i, 1000 + i)), SamplingSpec(max_tokens=4, seed=i)) for i in range(8)]
        return await asyncio.wait_for(asyncio.gather(*reqs), 120)

    gens = asyncio.run(run())
    assert [len(g[0].token_ids) for g in gens] == [4] * 8


def test_a_failed_engine_step_fails_every_caller(tiny_model_dir):
    """If vLLM's step raises, the waiting requests and every later one get EngineDead (no hang)."""
    from proctor.rollout.engine import Engine, EngineDead

    e = Engine(str(tiny_model_dir), CFG)
    try:
        def broken_step():
            raise RuntimeError("injected step failure")

        e.llm.llm_engine.step = broken_step

        async def run():
            return await asyncio.wait_for(asyncio.gather(
                *(e.generate([1, 2, 3], SamplingSpec(max_tokens=4)) for _ in range(3)), return_exceptions=True), 60)

        errors = asyncio.run(run())
        assert all(isinstance(x, EngineDead) and "injected step failure" in str(x) for x in errors), errors
        with pytest.raises(EngineDead):
            asyncio.run(e.generate([1, 2, 3], SamplingSpec(max_tokens=4)))
        with pytest.raises(EngineDead):
            asyncio.run(e.update_weights({}, 1))
    finally:
        e._closed = True


@pytest.mark.slow
def test_compiled_engine_matches_hf_before_and_after_a_weight_update(tiny_model_dir, tmp_path):
    """rollout.compile: the compiled model gives HF's greedy tokens, and a weight update reaches the
    compiled graph (it reads the same parameter tensors)."""
    from safetensors.numpy import load_file
    from transformers import AutoConfig, LlamaForCausalLM

    from proctor.rollout.engine import Engine

    engine = Engine(str(tiny_model_dir), RolloutConfig(max_model_len=1024, kv_cache_gib=1, compile=True))
    try:
        prompt = _ids(engine.tokenizer, PROMPTS[2])
        spec = SamplingSpec(temperature=0.0, max_tokens=16)
        torch.manual_seed(123)
        other = LlamaForCausalLM(AutoConfig.from_pretrained(tiny_model_dir)).to(torch.float32).eval()
        other.save_pretrained(tmp_path)
        for model, version in ((_hf(tiny_model_dir), 0), (other, 5)):
            if version:
                asyncio.run(engine.update_weights(load_file(str(tmp_path / "model.safetensors")), version=version))
            got = asyncio.run(engine.generate(prompt, spec))[0]
            with torch.no_grad():
                hf = model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False,
                                    pad_token_id=engine.tokenizer.eos_token_id)[0, len(prompt):].tolist()
            assert got.token_ids == hf[: len(got.token_ids)] and got.version == version
    finally:
        engine.close()


def test_adapter_dirs_of_engines_no_longer_running_are_removed(tmp_path):
    import os
    import subprocess
    import sys

    from proctor.rollout.engine import adapter_dir

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f"{gone.pid}-abcd"          # an engine killed before it removed its dir
    live = tmp_path / f"{os.getppid()}-efgh"       # a running process's dir stays
    other = tmp_path / "not-a-pid"                 # not ours to judge
    for d in (stale, live, other):
        (d / "adapter_model.safetensors").parent.mkdir()
        (d / "adapter_model.safetensors").write_bytes(b"x")
    new = adapter_dir(str(tmp_path))
    assert not stale.exists() and live.exists() and other.exists()
    assert os.path.dirname(new) == str(tmp_path) and os.path.basename(new).startswith(f"{os.getpid()}-")
