"""EngineActor on a real local Ray: generation, and a weight push through the object store."""

import asyncio

import pytest

from proctor.rollout.config import RolloutConfig
from proctor.rollout.types import SamplingSpec


@pytest.mark.slow
def test_engine_actor_generates_and_takes_weights_from_the_object_store(ray_local, tiny_model_dir):
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    from proctor.rollout.engine_group import EngineGroup

    ray = ray_local
    gen = EngineGroup(str(tiny_model_dir), RolloutConfig(max_model_len=1024), num_cpus=0.1)
    actor = gen.actors[0]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = tok("def add(a, b):", add_special_tokens=False).input_ids
    spec = SamplingSpec(temperature=0.0, max_tokens=12)
    before = asyncio.run(gen.generate(prompt, spec))[0]
    assert before.version == 0 and len(before.token_ids) == len(before.logprobs) > 0

    torch.manual_seed(7)
    other = LlamaForCausalLM(AutoConfig.from_pretrained(tiny_model_dir)).to(torch.float32).eval()
    state = {k: v.detach().numpy() for k, v in other.state_dict().items() if k != "lm_head.weight"}
    ref = ray.put(state)
    seconds = ray.get(actor.update_weights.remote([ref], 3))  # by reference: fetched inside the actor
    after = asyncio.run(gen.generate(prompt, spec))[0]
    with torch.no_grad():
        hf = other.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                            pad_token_id=tok.eos_token_id)[0, len(prompt):].tolist()
    assert after.version == 3 and seconds > 0
    assert after.token_ids == hf[: len(after.token_ids)]
    stats = ray.get(actor.stats.remote())
    assert stats["version"] == 3 and 0 < stats["busy_s"] <= stats["wall_s"]
    assert stats["threads"] == 1  # Ray's default for an actor reserving less than one CPU
    gen.shutdown()


@pytest.mark.slow
def test_episodes_over_engine_actors_and_the_sandbox_pool(ray_local, tiny_model_dir):
    """The distributed path: RLEF episodes as coroutines over 2 EngineActors and a SandboxPool."""
    from transformers import AutoTokenizer

    from proctor.problems import load_problems
    from proctor.rollout.engine_group import EngineGroup
    from proctor.rollout.episode import run_episode
    from proctor.sandbox_pool.pool import SandboxPool

    ray = ray_local
    gen = EngineGroup(str(tiny_model_dir), RolloutConfig(max_model_len=1024, engines=2, threads_per_engine=2),
                      num_cpus=0.1)
    actors = gen.actors
    pool = SandboxPool(actors=1, slots=2)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    problems = load_problems("bundled", limit=4)

    async def run():
        spec = SamplingSpec(temperature=1.0, max_tokens=16, seed=0)
        return await asyncio.gather(*(run_episode(p, gen, pool.judge, tok, max_turns=2, spec=spec) for p in problems))

    episodes = asyncio.run(run())
    for p, e in zip(problems, episodes):
        assert e.problem_id == p.id and e.private_verdict == "fail" and len(e.turns) == 2
        assert len(e.token_ids) == len(e.action_mask) == len(e.logprobs)
        assert sum(e.action_mask) == sum(b - a for a, b in (t.reply_span for t in e.turns))
    stats = [ray.get(a.stats.remote()) for a in actors]
    assert all(s["busy_s"] > 0 for s in stats), "both engines should have served episodes"
    assert [s["threads"] for s in stats] == [2, 2]  # rollout.threads_per_engine, not Ray's 1 for a 0.1-CPU actor
    pool.shutdown()
    gen.shutdown()


@pytest.mark.slow
def test_engine_killed_mid_rollout_is_replaced_with_the_pushed_weights(ray_local, tiny_model_dir):
    """Kill the only engine while episodes are in flight: they finish on a replacement that first
    loads the last pushed weights (every turn still carries that weight version)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    from proctor.problems import load_problems
    from proctor.rollout.engine_group import EngineGroup
    from proctor.rollout.episode import run_episode
    from proctor.sandbox_pool.pool import SandboxPool

    ray = ray_local
    group = EngineGroup(str(tiny_model_dir), RolloutConfig(max_model_len=1024), num_cpus=0.1)
    group.wait_ready()
    torch.manual_seed(11)
    other = LlamaForCausalLM(AutoConfig.from_pretrained(tiny_model_dir))
    group.load(ray.put({k: v.detach().numpy() for k, v in other.state_dict().items() if k != "lm_head.weight"}), 3)
    pool = SandboxPool(actors=1, slots=2)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    problems = load_problems("bundled", limit=6)
    calls = {"n": 0}

    class KillAfterFirstReplies:
        async def generate(self, prompt_ids, spec):
            calls["n"] += 1
            if calls["n"] == 4:
                ray.kill(group.actors[0], no_restart=True)
            return await group.generate(prompt_ids, spec)

    async def run():
        spec = SamplingSpec(temperature=1.0, max_tokens=24, seed=0)
        return await asyncio.gather(*(run_episode(p, KillAfterFirstReplies(), pool.judge, tok, max_turns=2, spec=spec)
                                      for p in problems))

    with pytest.warns(RuntimeWarning, match="engine 0 died"):
        episodes = asyncio.run(run())
    assert group.replaced == 1 and calls["n"] >= len(problems)
    assert [e.problem_id for e in episodes] == [p.id for p in problems]
    assert all(t.version == 3 for e in episodes for t in e.turns)
    assert ray.get(group.actors[0].stats.remote())["version"] == 3
    pool.shutdown()
    group.shutdown()


@pytest.mark.slow
def test_an_adapter_push_serves_the_trained_network(ray_local, tiny_model_dir):
    """rollout.max_lora_rank: a push carries only the LoRA adapter (peft's files), and the engine's
    greedy output is the merged network's, as HF generates it; a second push replaces the first."""
    import torch
    from test_learner import hf_with
    from test_lora import trained_adapters
    from transformers import AutoTokenizer

    from proctor.learner.lora import adapter_files, merged_named
    from proctor.rollout.engine import is_adapter
    from proctor.rollout.engine_group import EngineGroup

    ray = ray_local
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = tok("def add(a, b):", add_special_tokens=False).input_ids
    spec = SamplingSpec(temperature=0.0, max_tokens=12)
    gen = EngineGroup(str(tiny_model_dir), RolloutConfig(max_model_len=1024, max_lora_rank=8), num_cpus=0.1)
    outputs = [asyncio.run(gen.generate(prompt, spec))[0].token_ids]  # before any push: the base network
    for version, scale in ((1, 0.1), (2, 0.3)):
        model = trained_adapters(tiny_model_dir, rank=8, scale=scale, seed=version)
        files = adapter_files(model)
        assert is_adapter(files) and sum(a.nbytes for a in files.values()) < 2**20  # not the 25 MB network
        gen.load(ray.put(files), version)
        got = asyncio.run(gen.generate(prompt, spec))[0]
        merged = hf_with(tiny_model_dir, {k: v.numpy() for k, v in merged_named(model)})
        with torch.no_grad():
            hf = merged.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                 pad_token_id=tok.eos_token_id)[0, len(prompt):].tolist()
        assert got.version == version and got.token_ids == hf[: len(got.token_ids)]
        outputs.append(got.token_ids)
    assert outputs[0] != outputs[1] != outputs[2]  # each adapter changed what the engine generates
    gen.shutdown()


def _group_spawning(first_actor_cls, later_actor_cls):
    """An EngineGroup whose first actor is ``first_actor_cls`` and later ones ``later_actor_cls``
    (stand-ins that start in no time: what is tested is the group's start-up, not vLLM)."""
    from proctor.rollout.engine_group import EngineGroup

    class Group(EngineGroup):
        spawned = 0

        def _spawn(self, i):
            Group.spawned += 1
            return (first_actor_cls if Group.spawned == 1 else later_actor_cls).remote()

    return Group


def test_an_engine_whose_worker_dies_while_starting_is_replaced(start_up_stand_ins):
    group = _group_spawning(start_up_stand_ins.dies, start_up_stand_ins.starts)("unused", RolloutConfig())
    with pytest.warns(RuntimeWarning, match="engine 0 died"):
        group.wait_ready()
    assert group.replaced == 1 and type(group).spawned == 2
    assert group.stats() == [{"version": 0}]
    group.shutdown()


def test_an_engine_whose_build_fails_is_not_retried(ray_local, start_up_stand_ins):
    cls = _group_spawning(start_up_stand_ins.fails, start_up_stand_ins.starts)
    group = cls("unused", RolloutConfig())
    with pytest.raises(ray_local.exceptions.RayActorError, match="set-up failed"):
        group.wait_ready()
    assert cls.spawned == 1 and group.replaced == 0
    group.shutdown()


def test_an_engine_that_dies_while_loading_a_push_is_replaced_with_those_weights(ray_local):
    """The push after a learner step is when memory peaks (the learner, the engine and the weights in
    the object store at once): an engine killed there is replaced and loads the pushed weights,
    instead of ending the run."""
    import os

    import numpy as np

    @ray_local.remote(num_cpus=0)
    class DiesOnPush:
        def update_weights(self, state, version):
            os._exit(1)

    @ray_local.remote(num_cpus=0)
    class Takes:
        def __init__(self):
            self.version = 0

        def update_weights(self, state, version):
            self.version = version
            return 0.25

        def stats(self):
            return {"version": self.version}

    cls = _group_spawning(DiesOnPush, Takes)
    group = cls("unused", RolloutConfig())
    with pytest.warns(RuntimeWarning, match="engine 0 died"):
        group.load(ray_local.put({"w": np.zeros(2)}), 7)
    assert group.replaced == 1 and cls.spawned == 2
    assert group.stats() == [{"version": 7}]  # the replacement took the push before anything else
    assert group.load(ray_local.put({"w": np.ones(2)}), 8) == 0.25 and group.replaced == 1
    group.shutdown()
