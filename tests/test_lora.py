"""LoRA on the policy (learner.lora_rank): adapters are all that trains, the reference is the network
with its adapters off, the merged weights that leave the learner are the trained network, and a run
resumes bit for bit."""

import numpy as np
import pytest
import torch
from test_learner import hf_with, on_policy_rounds, sample, target_prob, weights

from proctor.learner.config import LearnerConfig
from proctor.learner.lora import add_adapters, merged_named, reference
from proctor.learner.model import action_logprobs


def logprobs(model, ids):
    ids = torch.tensor([ids])
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[:, :3] = False
    with torch.no_grad():
        return action_logprobs(model, ids, torch.ones_like(ids), mask)[0]


def trained_adapters(model_dir, rank=4, targets=(), scale=0.1, seed=0):
    """A LoRA model whose B matrices are random (as after training: fresh adapters are the identity)."""
    torch.manual_seed(seed)  # the A matrices' initialisation
    model = add_adapters(hf_with(model_dir, None), rank, None, 0.0, list(targets))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


IDS = [2, 7, 3, 9, 11, 4, 5, 8, 12, 6]


def test_reference_is_the_base_model_and_merged_weights_are_the_adapted_network(v16_model_dir):
    base = hf_with(v16_model_dir, None)
    model = trained_adapters(v16_model_dir)
    adapted = logprobs(model, IDS)
    with reference(model):
        assert torch.equal(logprobs(model, IDS), logprobs(base, IDS))
    assert not torch.allclose(adapted, logprobs(base, IDS), atol=1e-3)  # the adapters do change the network
    named = dict(merged_named(model))
    assert set(named) == {n for n, _ in base.named_parameters()}  # the base model's own names, no lora_*
    merged = hf_with(v16_model_dir, {k: v.numpy() for k, v in named.items()})
    assert torch.allclose(logprobs(merged, IDS), adapted, atol=1e-5)
    assert torch.equal(logprobs(model, IDS), adapted)  # merging left the model as it was


def test_only_the_adapters_are_trainable_and_targets_are_checked(v16_model_dir):
    model = trained_adapters(v16_model_dir, rank=2, targets=["q_proj", "v_proj"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {"q_proj", "v_proj"}
    with pytest.raises(ValueError, match=r"\['qkv'\] name no linear module of LlamaForCausalLM; its linear "
                                         r"modules: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"):
        add_adapters(hf_with(v16_model_dir, None), 2, None, 0.0, ["q_proj", "qkv"])
    with pytest.raises(ValueError, match="zero_stage=3"):
        LearnerConfig(lora_rank=8, zero_stage=3)
    with pytest.raises(ValueError, match="only gae builds a critic"):
        LearnerConfig(critic_lora_rank=8, advantage="grpo")


@pytest.mark.slow
@pytest.mark.parametrize("advantage,dtype,workers,critic_lora", [("grpo", "float32", 1, 0), ("gae", "float32", 1, 0),
                                                                 ("gae", "float32", 1, 8), ("grpo", "bfloat16", 2, 0)])
def test_lora_learns_a_trivially_learnable_reward_without_a_reference_copy(ray_local, v16_model_dir, advantage, dtype,
                                                                           workers, critic_lora):
    from proctor.learner.group import LearnerGroup

    ray = ray_local
    cfg = LearnerConfig(lr=1e-2, weight_decay=0.0, warmup_steps=0, kl_beta=0.01, minibatch_size=8, ppo_epochs=2,
                        zero_stage=2, advantage=advantage, dtype=dtype, lora_rank=8, lora_alpha=64,
                        world_size=workers, critic_lora_rank=critic_lora)
    group = LearnerGroup(str(v16_model_dir), cfg, seed=0, num_cpus_per_worker=0.5)
    assert ray.get(group.workers[0].has_reference.remote()) is False  # the base network is the reference
    full = sum(p.numel() for p in hf_with(v16_model_dir, None).parameters())
    rewards, metrics, state = on_policy_rounds(ray, group, v16_model_dir)
    # The batches' mean rewards (16 episodes each) are noisy; the policy's expected reward is exact.
    before, after = target_prob(hf_with(v16_model_dir, None)), target_prob(hf_with(v16_model_dir, state))
    assert after > 2 * before and after > 0.1, f"P(target) {before:.3f} -> {after:.3f}; batch rewards {rewards}"
    m = metrics[-1]
    assert 0 < m["trainable_params"] < full / 4
    head = 64 + 1  # the value head: hidden 64 -> 1
    if advantage == "gae":  # the critic: in full (less its absent lm_head), or its adapters and head only
        assert (0 < m["critic_trainable_params"] - head < full / 4) if critic_lora else \
            (m["critic_trainable_params"] > full / 2)
        assert np.isfinite(m["value_loss"]) and m["critic_grad_norm"] > 0
    else:
        assert m["critic_trainable_params"] == 0
    assert m["kl_ref"] > 0 and np.isfinite(m["policy_loss"])  # the adapters-off reference gives a real KL


@pytest.mark.slow
def test_lora_resume_is_bit_exact_and_the_saved_policy_loads_merged_and_as_an_adapter(ray_local, v16_model_dir,
                                                                                       tmp_path):
    from peft import PeftModel

    from proctor.learner.group import LearnerGroup

    ray = ray_local
    cfg = LearnerConfig(lr=1e-2, warmup_steps=2, kl_beta=0.05, minibatch_size=4, ppo_epochs=2, zero_stage=2,
                        advantage="grpo", lora_rank=4)
    batches = [sample(hf_with(v16_model_dir, None), 8, seed=i) for i in range(3)]
    straight = LearnerGroup(str(v16_model_dir), cfg, seed=3, num_cpus_per_worker=0.5)
    for b in batches:
        straight.train(b)
    expected = weights(ray, straight)
    straight.save_policy(str(tmp_path / "policy"))
    straight.shutdown()

    stopped = LearnerGroup(str(v16_model_dir), cfg, seed=3, num_cpus_per_worker=0.5)
    stopped.train(batches[0])
    stopped.save(str(tmp_path / "ckpt"))
    stopped.shutdown()
    resumed = LearnerGroup(str(v16_model_dir), cfg, seed=99, num_cpus_per_worker=0.5)
    resumed.load(str(tmp_path / "ckpt"))
    for b in batches[1:]:
        resumed.train(b)
    got = weights(ray, resumed)
    resumed.shutdown()
    assert set(got) == set(expected)
    for name in expected:
        assert np.array_equal(got[name], expected[name]), name

    pushed = logprobs(hf_with(v16_model_dir, expected), IDS)
    assert not torch.allclose(pushed, logprobs(hf_with(v16_model_dir, None), IDS), atol=1e-4)  # it trained
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy"), dtype=torch.float32).eval()
    assert torch.allclose(logprobs(merged, IDS), pushed, atol=1e-6)
    adapter = PeftModel.from_pretrained(hf_with(v16_model_dir, None), str(tmp_path / "policy" / "adapter")).eval()
    assert torch.allclose(logprobs(adapter, IDS), pushed, atol=1e-5)
