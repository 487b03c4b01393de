"""The DeepSpeed PPO learner on real local Ray: it learns, resumes bit for bit, keeps data-parallel
ranks identical, and its weights reach a vLLM EngineActor through the object store."""

import asyncio

import numpy as np
import pytest
import torch

from proctor.learner.batch import Sample
from proctor.learner.config import LearnerConfig

TARGET = 5


def hf_with(model_dir, state: dict | None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    if state is not None:
        # bfloat16 weights travel as uint16 bit patterns (learner.model.to_numpy)
        state = {k: torch.from_numpy(np.array(v)).view(torch.bfloat16).float() if np.asarray(v).dtype == np.uint16
                 else torch.from_numpy(np.array(v)) for k, v in state.items()}
        missing, _ = model.load_state_dict(state, strict=False)
        assert set(missing) <= {"lm_head.weight"}
    return model


@torch.no_grad()
def sample(model, n: int, seed: int, version: int = 0, reply_len: int = 8, prompt_len: int = 6) -> list[Sample]:
    """n single-turn episodes sampled from ``model``; reward = share of reply tokens equal to TARGET."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    out = []
    for _ in range(n):
        ids = torch.randint(2, vocab, (prompt_len,), generator=g).tolist()
        lps = [0.0] * prompt_len
        for _ in range(reply_len):
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
            tok = int(torch.multinomial(logp.exp(), 1, generator=g))
            ids.append(tok)
            lps.append(float(logp[tok]))
        reward = sum(t == TARGET for t in ids[prompt_len:]) / reply_len
        out.append(Sample(ids, [0] * prompt_len + [1] * reply_len, lps, [prompt_len - 1],
                          [(prompt_len, prompt_len + reply_len)], [reward], version=version,
                          id=f"group{len(out) // 4}"))  # groups of 4 for the critic-free modes
    return out


def weights(ray, group) -> dict:
    return ray.get(group.weights_ref())


def on_policy_rounds(ray, group, model_dir, rounds: int = 8) -> tuple[list[float], list[dict], dict]:
    """``rounds`` iterations, each on 16 episodes sampled from the weights the group last pushed:
    the mean reward of each batch, the learner's metrics and the last weights."""
    rewards, metrics, state = [], [], None
    for it in range(rounds):
        batch = sample(hf_with(model_dir, state), 16, seed=it, version=it)
        rewards.append(np.mean([s.turn_rewards[0] for s in batch]))
        metrics.append(group.train(batch))
        state = weights(ray, group)
    group.shutdown()
    return rewards, metrics, state


@torch.no_grad()
def target_prob(model, n: int = 64, prompt_len: int = 6) -> float:
    """The expected reward of the first reply token, exactly: P(TARGET) after fixed random prompts
    (no sampling noise, unlike a batch's mean reward)."""
    ids = torch.randint(2, model.config.vocab_size, (n, prompt_len), generator=torch.Generator().manual_seed(99))
    return float(torch.softmax(model(input_ids=ids).logits[:, -1].float(), -1)[:, TARGET].mean())


@pytest.mark.slow
@pytest.mark.parametrize("advantage", ["gae", "grpo", "rloo"])
def test_ppo_raises_a_trivially_learnable_reward(ray_local, v16_model_dir, advantage):
    from proctor.learner.group import LearnerGroup

    ray = ray_local
    cfg = LearnerConfig(lr=1e-3, warmup_steps=0, kl_beta=0.01, minibatch_size=8, ppo_epochs=2, zero_stage=2,
                        advantage=advantage)
    group = LearnerGroup(str(v16_model_dir), cfg, seed=0, num_cpus_per_worker=0.5)
    rewards, metrics, _ = on_policy_rounds(ray, group, v16_model_dir)
    first, last = np.mean(rewards[:2]), np.mean(rewards[-2:])
    assert last > first + 0.15, f"mean reward did not rise: {rewards}"
    m = metrics[-1]
    assert m["steps"] == 8 * 2 * 2 and m["iteration"] == 8
    critic = ("value_loss", "value_explained_var") if advantage == "gae" else ("kl_loss", "nonzero_advantage_frac")
    for key in ("policy_loss", "kl_ref", "approx_kl", "policy_clip_frac", "entropy", "tokens_per_s", "grad_norm",
                *critic):
        assert np.isfinite(m[key]), key
    assert m["kl_ref"] > 0 and m["entropy"] < metrics[0]["entropy"]  # moved away from the start, sharper
    if advantage != "gae":  # no critic was built or trained
        assert "value_loss" not in m and "critic_grad_norm" not in m and m["kl_loss"] > 0


@pytest.mark.slow
def test_seq_mean_weighs_episodes_not_tokens_whatever_the_micro_batches(ray_local, v16_model_dir):
    """learner.loss_agg=seq_mean: one step on episodes of different lengths has the same loss and
    gradient whether the minibatch runs as one micro-batch or as several, and not token_mean's: in
    each group (one short episode, one long) the advantages cancel per episode, not per token."""
    from proctor.learner.group import LearnerGroup

    ray = ray_local
    model = hf_with(v16_model_dir, None)
    short, long = sample(model, 4, seed=1, reply_len=4), sample(model, 4, seed=2, reply_len=24)
    for i, (a, b) in enumerate(zip(short, long)):
        a.id = b.id = f"group{i}"
        a.turn_rewards, b.turn_rewards = [1.0], [0.0]   # the short one of each group did better

    def one_step(agg, micro_batch_tokens):
        cfg = LearnerConfig(lr=1e-3, warmup_steps=0, kl_beta=0.0, minibatch_size=8, zero_stage=2, advantage="grpo",
                            loss_agg=agg, micro_batch_tokens=micro_batch_tokens, whiten_advantages=False)
        group = LearnerGroup(str(v16_model_dir), cfg, seed=0, num_cpus_per_worker=0.5)
        metrics = group.train([Sample(**vars(s)) for pair in zip(short, long) for s in pair])
        w = weights(ray, group)
        group.shutdown()
        return metrics, w

    (whole, w_whole), (split, w_split), (tokens, _) = (one_step("seq_mean", 4096), one_step("seq_mean", 40),
                                                       one_step("token_mean", 4096))
    assert whole["policy_loss"] == pytest.approx(0.0, abs=1e-6) == split["policy_loss"]  # +A and -A, one episode each
    assert split["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-4)
    assert max(np.abs(w_whole[k] - w_split[k]).max() for k in w_whole) < 1e-5
    # token_mean: the long episode's 24 tokens outweigh the short one's 4: a net push down.
    assert tokens["policy_loss"] > 0.1 and abs(tokens["grad_norm"] - whole["grad_norm"]) > 0.01 * whole["grad_norm"]


@pytest.mark.slow
@pytest.mark.parametrize("stage,advantage,dtype", [(2, "gae", "float32"), (3, "gae", "float32"),
                                                  (2, "grpo", "float32"), (0, "gae", "bfloat16"), (2, "grpo", "bfloat16")])
def test_resume_continues_bit_for_bit(ray_local, v16_model_dir, tmp_path, stage, advantage, dtype):
    from proctor.learner.group import LearnerGroup

    ray = ray_local
    cfg = LearnerConfig(lr=1e-3, warmup_steps=3, kl_beta=0.05, minibatch_size=4, ppo_epochs=2, zero_stage=stage,
                        advantage=advantage, dtype=dtype)
    model = hf_with(v16_model_dir, None)
    batches = [sample(model, 8, seed=i) for i in range(3)]

    straight = LearnerGroup(str(v16_model_dir), cfg, seed=3, num_cpus_per_worker=0.5)
    for b in batches:
        straight.train(b)
    expected = weights(ray, straight)
    expected_digest = straight.state_digests()[0]
    straight.shutdown()

    stopped = LearnerGroup(str(v16_model_dir), cfg, seed=3, num_cpus_per_worker=0.5)
    stopped.train(batches[0])
    stopped.save(str(tmp_path / "ckpt"))
    stopped.train(batches[1])  # work after the checkpoint is thrown away
    stopped.shutdown()

    resumed = LearnerGroup(str(v16_model_dir), cfg, seed=99, num_cpus_per_worker=0.5)  # seed: restored from ckpt
    resumed.load(str(tmp_path / "ckpt"))
    for b in batches[1:]:
        metrics = resumed.train(b)
    got = weights(ray, resumed)
    assert resumed.state_digests()[0] == expected_digest  # critic too
    tag = resumed.save(str(tmp_path / "ckpt"))
    assert len(list((tmp_path / "ckpt" / "rng").iterdir())) == 2  # the older one stays until pruned
    resumed.prune(str(tmp_path / "ckpt"), tag)  # then only the newer is kept (GBs each)
    kept = [p.name for d in ("actor", "critic") for p in (tmp_path / "ckpt" / d).glob("step*")]
    assert kept == [f"step{3 * 2 * 2}"] * (1 + (advantage == "gae"))
    assert [p.name for p in (tmp_path / "ckpt" / "rng").iterdir()] == [f"step{3 * 2 * 2}_rank0.pt"]
    resumed.shutdown()
    assert metrics["steps"] == 3 * 2 * 2
    assert set(got) == set(expected)
    for name in expected:
        assert np.array_equal(got[name], expected[name]), name


@pytest.mark.slow
def test_two_workers_stay_identical_and_push_to_an_engine(ray_local, tiny_model_dir):
    from transformers import AutoTokenizer

    from proctor.learner.group import LearnerGroup
    from proctor.rollout.config import RolloutConfig
    from proctor.rollout.engine_group import EngineGroup
    from proctor.rollout.types import SamplingSpec

    ray = ray_local
    cfg = LearnerConfig(lr=1e-3, warmup_steps=0, minibatch_size=4, ppo_epochs=1, zero_stage=2, world_size=2,
                        micro_batch_tokens=32)
    model = hf_with(tiny_model_dir, None)
    batches = [sample(model, 8, seed=i, reply_len=6) for i in range(2)]
    group = LearnerGroup(str(tiny_model_dir), cfg, seed=0, num_cpus_per_worker=0.5)
    before = group.state_digests()
    for b in batches:
        metrics = group.train(b)
    digests = group.state_digests()
    assert digests[0] == digests[1], "data-parallel ranks diverged"
    assert digests[0]["actor"] != before[0]["actor"] and digests[0]["critic"] != before[0]["critic"]
    assert metrics["steps"] == 2 * 2 and np.isfinite(metrics["policy_loss"])

    engines = EngineGroup(str(tiny_model_dir), RolloutConfig(max_model_len=512), num_cpus=0.1)
    assert engines.load(group.weights_ref(), version=7) > 0  # the driver's push: one ray.put, every engine loads it
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = tok("def add(a, b):", add_special_tokens=False).input_ids
    got = asyncio.run(engines.generate(prompt, SamplingSpec(temperature=0.0, max_tokens=12)))[0]
    trained = hf_with(tiny_model_dir, weights(ray, group))
    with torch.no_grad():
        hf = trained.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                              pad_token_id=tok.eos_token_id)[0, len(prompt):].tolist()
    assert got.version == 7
    assert got.token_ids == hf[: len(got.token_ids)]
    # The engine's logprobs are the trained model's, measurably not the initial model's.
    seq = torch.tensor([prompt + got.token_ids])

    def logprobs(m):
        with torch.no_grad():
            lp = torch.log_softmax(m(input_ids=seq).logits[0, len(prompt) - 1:-1].float(), -1)
        return lp.gather(-1, torch.tensor(got.token_ids).unsqueeze(-1)).squeeze(-1)

    new_lp, old_lp = logprobs(trained), logprobs(model)
    engine_lp = torch.tensor(got.logprobs)
    assert torch.allclose(engine_lp, new_lp, atol=2e-3), (engine_lp, new_lp)
    assert (new_lp - old_lp).abs().max() > 2e-2, "training barely moved the policy: the test cannot tell"
    group.shutdown()
    engines.shutdown()


@pytest.mark.slow
def test_bfloat16_training_and_bfloat16_push(ray_local, v16_model_dir):
    from proctor.learner.group import LearnerGroup
    from proctor.rollout.engine import _to_tensors

    ray = ray_local
    cfg = LearnerConfig(lr=1e-3, warmup_steps=0, minibatch_size=4, ppo_epochs=2, zero_stage=2, dtype="bfloat16")
    group = LearnerGroup(str(v16_model_dir), cfg, seed=0, num_cpus_per_worker=0.5)
    seen = []  # rank 0's minibatches as they finish, through the group's progress queue
    metrics = group.train(sample(hf_with(v16_model_dir, None), 8, seed=0), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]  # 8 episodes / 4 per minibatch x 2 epochs
    assert np.isfinite(metrics["policy_loss"]) and np.isfinite(metrics["value_loss"])
    pushed = ray.get(group.weights_ref("bfloat16"))
    group.shutdown()
    assert all(a.dtype == np.uint16 for a in pushed.values())  # bf16 bit patterns
    tensors = dict(_to_tensors(pushed, tied=True))
    emb = tensors["model.embed_tokens.weight"]
    assert emb.dtype == torch.bfloat16 and tensors["lm_head.weight"] is emb
    assert torch.isfinite(emb.float()).all() and 0.001 < emb.float().abs().mean() < 1


@pytest.mark.slow
def test_frozen_parameters_stay_put_and_grpo_without_kl_builds_no_reference(ray_local, v16_model_dir):
    """learner.freeze=[embed_tokens] in bf16 grpo with kl_beta 0 (the CPU recipe's layout): the embedding
    is pushed unchanged, every block weight moves, and no reference model is built."""
    from proctor.learner.group import LearnerGroup

    ray = ray_local
    before = {k: v.numpy() for k, v in hf_with(v16_model_dir, None).state_dict().items()}
    cfg = LearnerConfig(lr=1e-2, warmup_steps=0, minibatch_size=8, zero_stage=0, dtype="bfloat16", advantage="grpo",
                        kl_beta=0.0, freeze=["embed_tokens"], skip_uniform_groups=True)
    group = LearnerGroup(str(v16_model_dir), cfg, seed=0, num_cpus_per_worker=0.5)
    assert ray.get(group.workers[0].has_reference.remote()) is False
    metrics = group.train(sample(hf_with(v16_model_dir, None), 8, seed=0))
    after = ray.get(group.weights_ref())
    group.shutdown()
    assert metrics["episodes_trained"] + metrics["skipped_uniform"] == 8 and metrics["episodes_trained"] > 0
    emb = "model.embed_tokens.weight"
    assert np.array_equal(np.asarray(after[emb]).view(np.uint16),
                          torch.from_numpy(before[emb]).to(torch.bfloat16).view(torch.uint16).numpy())
    moved = [k for k in after if k != emb and not np.allclose(
        torch.from_numpy(np.asarray(after[k]).view(np.int16)).view(torch.bfloat16).float().numpy(), before[k], atol=1e-3)]
    assert len(moved) == len(after) - 1


def test_freeze_pattern_that_matches_nothing_names_the_modules(v16_model_dir):
    from proctor.learner.model import freeze

    model = hf_with(v16_model_dir, None)
    with pytest.raises(ValueError, match=r"'embeddings' matches no parameter of LlamaForCausalLM; its modules: "
                                         r".*model\.embed_tokens.*model\.layers\.self_attn\.q_proj"):
        freeze(model, ["embeddings"])
    assert freeze(model, ["embed_tokens"]) == 1 and not model.model.embed_tokens.weight.requires_grad


@pytest.mark.slow
@pytest.mark.parametrize("advantage", ["grpo", "gae"])
def test_bfloat16_learner_agrees_with_float32(ray_local, v16_model_dir, advantage):
    """The same two iterations on the same batches in bf16 (fp32 master weights) and in fp32: the
    losses, the KL and the entropy agree to bf16's precision, |bf16 - fp32| <= 0.02 + 2% of |fp32|,
    and the trained policies' log-probabilities to within 30% of how far training moved them."""
    from proctor.learner.group import LearnerGroup

    ray = ray_local
    model = hf_with(v16_model_dir, None)
    batches = [sample(model, 8, seed=i) for i in range(2)]
    runs = {}
    for dtype in ("float32", "bfloat16"):
        cfg = LearnerConfig(lr=1e-3, warmup_steps=0, kl_beta=0.05, minibatch_size=8, zero_stage=0, dtype=dtype,
                            advantage=advantage)
        group = LearnerGroup(str(v16_model_dir), cfg, seed=0, num_cpus_per_worker=0.5)
        metrics = [group.train(b) for b in batches]
        pushed = {k: torch.from_numpy(np.asarray(v).view(np.int16)).view(torch.bfloat16).float() if v.dtype == np.uint16
                  else torch.from_numpy(np.asarray(v)) for k, v in ray.get(group.weights_ref()).items()}
        runs[dtype] = metrics, pushed
        group.shutdown()
    keys = ["policy_loss", "entropy", "approx_kl", "kl_ref"] + (["kl_loss"] if advantage == "grpo" else ["value_loss"])
    for it in range(2):
        for k in keys:
            a, b = runs["float32"][0][it][k], runs["bfloat16"][0][it][k]
            assert abs(a - b) <= 0.02 + 0.02 * abs(a), (it, k, a, b)
    # The two trained policies, each as plain fp32 HF models: their log-probabilities of the batch's
    # replies moved from the initial model's, and agree with each other to within 30% of that move.
    ids = torch.tensor([s.token_ids for s in batches[0]])
    mask = torch.tensor([s.action_mask for s in batches[0]], dtype=torch.bool)

    def logprobs(m):
        with torch.no_grad():
            lp = torch.log_softmax(m(input_ids=ids).logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        return lp[mask[:, 1:]]

    before = logprobs(model)
    after = {d: logprobs(hf_with(v16_model_dir, {k: w.numpy() for k, w in runs[d][1].items()})) for d in runs}
    move = (after["float32"] - before).abs().mean().item()
    gap = (after["bfloat16"] - after["float32"]).abs().mean().item()
    print(f"mean |logprob| move {move:.4f}, bf16 vs fp32 gap {gap:.4f}")
    assert move > 0.05, "training barely moved the policy: the comparison cannot tell"
    assert gap < 0.3 * move  # measured: 0.19 of the move in both modes (Adam's steps on near-zero gradients)


def test_auto_dtype_is_bfloat16_where_the_cpu_has_amx(monkeypatch):
    from proctor.learner import model

    assert model.resolve_dtype("float32", "cpu") == "float32" and model.resolve_dtype("bfloat16", "cpu") == "bfloat16"
    with open("/proc/cpuinfo") as f:
        assert model.cpu_has_amx() == ("amx_bf16" in f.read())
    for amx, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(model, "cpu_has_amx", lambda amx=amx: amx)
        assert model.resolve_dtype("auto", "cpu") == want


def test_the_optimizer_is_fused_on_a_gpu_only():
    from proctor.learner.deepspeed_setup import ds_config

    cfg = LearnerConfig()
    assert ds_config(cfg, 1e-6, 0, cuda=True)["optimizer"]["params"]["fused"] is True
    assert "fused" not in ds_config(cfg, 1e-6, 0)["optimizer"]["params"]  # CPU: torch's default AdamW
    assert "optimizer" not in ds_config(cfg, None, 0, cuda=True)            # inference-only engine
