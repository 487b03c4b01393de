"""The learner, the weight export and the PRM on a CUDA device (``pytest -m gpu tests/gpu``).

Skipped with a reason where CUDA is absent, so the CPU suite stays green. The worker runs in this
process (world size 1, NCCL), so the tests need only torch, transformers, numpy, deepspeed and
pydantic (peft for LoRA, Ray for the 2-rank group: those skip themselves when missing).
``PROCTOR_GPU_TESTS_ON=cpu`` runs the same tests on the CPU (a check of the tests themselves).
"""

import importlib.util
import os

import numpy as np
import pytest
import torch
from test_learner import hf_with, sample

from proctor.learner.config import LearnerConfig

pytestmark = pytest.mark.gpu
# cuBLAS is deterministic only with a fixed workspace, which must be chosen before CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@pytest.fixture(scope="module")
def device():
    if os.environ.get("PROCTOR_GPU_TESTS_ON") == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (set PROCTOR_GPU_TESTS_ON=cpu to run these tests on the CPU)")
    return torch.device("cuda", 0)


def worker(model_dir, device, seed=0, **kw):
    from proctor.learner.worker import PPOWorker

    cfg = LearnerConfig(**{"lr": 1e-3, "warmup_steps": 0, "kl_beta": 0.05, "minibatch_size": 4, "ppo_epochs": 1,
                           "dtype": "bfloat16", **kw})
    w = PPOWorker(str(model_dir), cfg, seed=seed, master_port=29611)
    assert w.device.type == device.type
    return w


def exported(w) -> dict:
    return w.export_weights(lambda state: {k: np.array(v) for k, v in state.items()})


def as_float(state: dict) -> dict:
    return {k: torch.from_numpy(v).view(torch.bfloat16).float().numpy() if v.dtype == np.uint16 else v
            for k, v in state.items()}


@pytest.mark.parametrize("stage", [0, 2, 3])
@pytest.mark.parametrize("advantage", ["gae", "grpo", "rloo"])
def test_learner_trains_on_the_device(v16_model_dir, device, advantage, stage):
    w = worker(v16_model_dir, device, advantage=advantage, zero_stage=stage)
    before = as_float(exported(w))
    model = hf_with(v16_model_dir, None)
    for it in range(2):
        m = w.train(sample(model, 8, seed=it))
    after = as_float(exported(w))
    for key in ("policy_loss", "kl_ref", "approx_kl", "entropy", "grad_norm", "tokens_per_s"):
        assert np.isfinite(m[key]), key
    assert m["steps"] == 4 and any(not np.array_equal(before[k], after[k]) for k in before)
    assert ("value_loss" in m) == (advantage == "gae")


@pytest.fixture
def deterministic():
    """Deterministic kernels for the test (warn where an op has none: the warning names it)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)


def test_resume_is_bit_exact_on_the_device(v16_model_dir, device, tmp_path, deterministic):
    model = hf_with(v16_model_dir, None)
    batches = [sample(model, 8, seed=i) for i in range(3)]
    kw = {"advantage": "gae", "zero_stage": 2, "warmup_steps": 2}
    straight = worker(v16_model_dir, device, seed=3, **kw)
    for b in batches:
        straight.train(b)
    expected = exported(straight)
    stopped = worker(v16_model_dir, device, seed=3, **kw)
    stopped.train(batches[0])
    stopped.save(tmp_path / "ckpt")
    resumed = worker(v16_model_dir, device, seed=99, **kw)
    resumed.load(tmp_path / "ckpt")
    for b in batches[1:]:
        resumed.train(b)
    got = exported(resumed)
    assert set(got) == set(expected)
    for k in expected:
        assert np.array_equal(got[k], expected[k]), k


def test_export_and_saved_policy_are_the_trained_network(v16_model_dir, device, tmp_path):
    from transformers import AutoModelForCausalLM

    from proctor.learner.model import action_logprobs

    w = worker(v16_model_dir, device, advantage="grpo", dtype="float32")
    w.train(sample(hf_with(v16_model_dir, None), 8, seed=0))
    state = exported(w)
    ids = torch.tensor([[2, 7, 3, 9, 11, 4, 5, 8]], device=device)
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        mine = action_logprobs(w.actor, ids, torch.ones_like(ids), mask)[0]
        pushed = hf_with(v16_model_dir, state).to(device)
        assert torch.allclose(action_logprobs(pushed, ids, torch.ones_like(ids), mask)[0], mine, atol=1e-5)
        w.save_policy(tmp_path / "policy")
        saved = AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy"), dtype=torch.float32).to(device)
        assert torch.allclose(action_logprobs(saved, ids, torch.ones_like(ids), mask)[0], mine, atol=1e-5)


def test_prm_scores_on_the_device_and_initialises_the_critic(v16_model_dir, device, tmp_path):
    from proctor.reward.prm import PRM, score_positions

    prm = PRM.from_pretrained(v16_model_dir).to(device)
    with torch.no_grad():
        prm.value_head.weight.normal_(0, 0.5)
    scores = score_positions(prm, [[2, 3, 4, 5], [6, 7]], [[1, 3], [1]], pad_id=0)
    assert [len(s) for s in scores] == [2, 1] and all(-1 <= x <= 1 for s in scores for x in s)
    prm.save_pretrained(tmp_path / "prm")
    from proctor.learner.worker import PPOWorker

    cfg = LearnerConfig(lr=1e-3, warmup_steps=0, minibatch_size=4, dtype="bfloat16", advantage="gae")
    critic_init = PPOWorker(str(v16_model_dir), cfg, seed=0, critic_dir=str(tmp_path / "prm"))
    head = critic_init.critic.module.value_head.weight
    assert head.device.type == device.type and torch.equal(head.float().cpu(), prm.value_head.weight.bfloat16().float().cpu())
    m = critic_init.train(sample(hf_with(v16_model_dir, None), 8, seed=0))
    assert np.isfinite(m["value_loss"]) and np.isfinite(m["value_explained_var"])


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft is not installed")
def test_lora_trains_and_exports_merged_weights_on_the_device(v16_model_dir, device):
    w = worker(v16_model_dir, device, advantage="grpo", lora_rank=4, lr=1e-2, zero_stage=2)
    before = as_float(exported(w))
    m = w.train(sample(hf_with(v16_model_dir, None), 8, seed=0))
    after = as_float(exported(w))
    assert w.ref is None and np.isfinite(m["kl_ref"]) and set(after) == set(before)
    assert any(not np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")
def test_two_ranks_over_nccl_stay_identical(v16_model_dir, device, tmp_path):
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    from proctor.cluster.ray_local import init_ray
    from proctor.learner.group import LearnerGroup

    ray = init_ray(num_cpus=4, tmp_dir=str(tmp_path / "ray"))  # Ray finds the GPUs itself
    try:
        cfg = LearnerConfig(lr=1e-3, warmup_steps=0, minibatch_size=4, zero_stage=2, world_size=2, dtype="bfloat16")
        group = LearnerGroup(str(v16_model_dir), cfg, seed=0, num_cpus_per_worker=1, num_gpus_per_worker=1)
        group.train(sample(hf_with(v16_model_dir, None), 8, seed=0))
        a, b = group.state_digests()
        group.shutdown()
        assert a == b
    finally:
        ray.shutdown()
