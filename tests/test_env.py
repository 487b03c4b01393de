"""The Gymnasium view of RLEF agrees with run_episode and registers with Gymnasium and Ray."""

import asyncio

import gymnasium
import pytest
from test_episode import (  # the scripted policy and problems (tests/ is on sys.path, beside conftest)
    ADD,
    DOUBLE,
    NO_CODE_REPLY,
    RIGHT_ADD,
    RIGHT_DOUBLE,
    WRONG_ADD,
    WRONG_DOUBLE,
    ScriptedGenerator,
)

from proctor.reward.config import RewardConfig
from proctor.reward.outcome import rlef_rewards
from proctor.rollout.env import ENV_ID, RAY_ENV_NAME, RLEFEnv, register
from proctor.rollout.episode import local_judge, run_episode
from proctor.rollout.prompts import first_turn
from proctor.sandbox_pool.judge import TestResult as Result
from proctor.sandbox_pool.judge import Verdict, judge


def rollout(env, problem_id, replies):
    obs, info = env.reset(options={"problem_id": problem_id})
    assert info == {"problem_id": problem_id}
    seen, rewards, infos, ends = [obs], [], [], None
    for reply in replies:
        obs, reward, terminated, truncated, info = env.step(reply)
        seen.append(obs), rewards.append(reward), infos.append(info)
        if terminated or truncated:
            ends = (terminated, truncated)
            break
    return seen, rewards, infos, ends


@pytest.mark.parametrize("problem, replies, costs", [
    (ADD, [WRONG_ADD, RIGHT_ADD], {}),
    (DOUBLE, [NO_CODE_REPLY, WRONG_DOUBLE, WRONG_DOUBLE, RIGHT_DOUBLE], {}),
    (ADD, [WRONG_ADD, WRONG_ADD, RIGHT_ADD], {"turn_cost": -0.5, "repeat_cost": -0.3})])
def test_env_matches_run_episode(problem, replies, costs, sandbox, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    ep = asyncio.run(run_episode(problem, ScriptedGenerator(tok, replies), local_judge(sandbox), tok))
    env = RLEFEnv([ADD, DOUBLE], lambda p, c, w: judge(sandbox, p, c, w), max_turns=3, seed=0,
                  reward_cfg=RewardConfig(**costs))
    seen, rewards, infos, ends = rollout(env, problem.id, replies)
    assert rewards == rlef_rewards(ep, env.reward_cfg) and ends == (True, False)
    if costs:  # the repeated second attempt pays both costs
        assert rewards == pytest.approx([-0.5, -0.8, 1.0])
    assert seen == [first_turn(problem), *[t.feedback for t in ep.turns]] and seen[-1] == ""
    assert [i["public_passed"] for i in infos] == [t.public_passed for t in ep.turns]
    assert [i["code"] for i in infos] == [t.code for t in ep.turns] and [i["turn"] for i in infos] == [0, 1, 2][: len(infos)]
    assert infos[-1]["private_verdict"] == ep.private_verdict and "private_verdict" not in infos[0]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(RIGHT_ADD)


def test_gymnasium_make_after_register(sandbox):
    register()
    env = gymnasium.make(ENV_ID, problems=[ADD], judge_sync=lambda p, c, w: judge(sandbox, p, c, w), max_turns=2)
    obs, info = env.reset(seed=0)
    assert obs == first_turn(ADD) and info["problem_id"] == "add" and env.observation_space.contains(obs)
    obs, reward, terminated, truncated, info = env.step(RIGHT_ADD)
    assert (obs, reward, terminated, truncated, info["private_verdict"]) == ("", 1.0, True, False, "pass")
    with pytest.raises(KeyError, match="nope"):
        env.reset(options={"problem_id": "nope"})


def test_ray_registration():
    register()
    from ray.tune.registry import ENV_CREATOR, _global_registry

    assert _global_registry.contains(ENV_CREATOR, RAY_ENV_NAME)
    env = _global_registry.get(ENV_CREATOR, RAY_ENV_NAME)({"problems": [ADD], "judge_sync": None})
    assert isinstance(env, RLEFEnv) and env.max_turns == 3


def test_infra_error_truncates_with_no_reward():
    broken = lambda p, c, w: Verdict("infra_error", [Result("infra_error", w == "public", "sandbox down")])  # noqa: E731
    env = RLEFEnv([ADD], broken)
    env.reset()
    obs, reward, terminated, truncated, info = env.step(WRONG_ADD)
    assert (obs, reward, terminated, truncated, info["infra_error"]) == ("", 0.0, False, True, True)
