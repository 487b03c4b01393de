"""RLEF episodes with a scripted policy, the real chat tokenizer and the real sandbox."""

import asyncio
import copy
import random
from itertools import chain

import pytest

from proctor.problems.format import Problem
from proctor.reward.config import RewardConfig
from proctor.reward.outcome import rlef_rewards
from proctor.rollout.episode import (
    NO_CODE,
    Conversation,
    FeedbackBank,
    local_judge,
    run_episode,
)
from proctor.rollout.prompts import first_turn
from proctor.rollout.types import Generation, SamplingSpec
from proctor.sandbox_pool.feedback import RETRY
from proctor.sandbox_pool.judge import TestResult as Result
from proctor.sandbox_pool.judge import Verdict

ADD = Problem(id="add", prompt="Write add(a, b) that returns a + b.", kind="assert", entry_point="add",
              public_tests=[{"code": "assert add(1, 2) == 3"}],
              private_tests=[{"code": "assert add(2, 5) == 7"}, {"code": "assert add(-1, 1) == 0"}],
              time_limit_s=5.0, memory_mb=256)
DOUBLE = Problem(id="double", prompt="Read an integer n and print 2n.", kind="stdin_stdout",
                 public_tests=[{"input": "3\n", "output": "6\n"}], private_tests=[{"input": "21\n", "output": "42\n"}],
                 time_limit_s=5.0, memory_mb=256)
WRONG_ADD = "Here is my solution:\n```python\ndef add(a, b):\n    return a - b\n```"
RIGHT_ADD = "Sorry, fixed:\n```python\ndef add(a, b):\n    return a + b\n```"
WRONG_DOUBLE = "```python\nprint(int(input()) + 1)\n```"
RIGHT_DOUBLE = "```python\nprint(2 * int(input()))\n```"
NO_CODE_REPLY = "You should simply add the two numbers together."
CFG = RewardConfig()


class ScriptedGenerator:
    """Stands in for the model: replies with scripted strings (+ <|im_end|>), fake logprobs, a version."""

    def __init__(self, tok, replies, version=7, eot=True):
        self.tok, self.replies, self.version, self.eot = tok, list(replies), version, eot
        self.prompts, self.generated = [], []

    async def generate(self, prompt_ids, spec):
        assert spec.n == 1
        self.prompts.append(list(prompt_ids))
        ids = self.tok(self.replies.pop(0), add_special_tokens=False)["input_ids"]
        ids += [self.tok.convert_tokens_to_ids("<|im_end|>")] if self.eot else []
        gen = Generation(ids, [-0.01 * (k + 1) for k in range(len(ids))], self.version, "stop" if self.eot else "length")
        self.generated.append(gen)
        return [gen]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def play(problem, tok, sandbox, replies, **kw):
    gen = ScriptedGenerator(tok, replies)
    ep = asyncio.run(run_episode(problem, gen, local_judge(sandbox), tok, **kw))
    check_invariants(ep, gen)
    return ep, gen


def check_invariants(ep, gen):
    assert len(ep.token_ids) == len(ep.action_mask) == len(ep.logprobs)
    assert [t for t, m in zip(ep.token_ids, ep.action_mask) if m] == list(chain(*(g.token_ids for g in gen.generated)))
    assert [lp for lp, m in zip(ep.logprobs, ep.action_mask) if m] == list(chain(*(g.logprobs for g in gen.generated)))
    assert all(lp == 0.0 for lp, m in zip(ep.logprobs, ep.action_mask) if not m)
    assert len(ep.turns) == len(gen.generated)
    for turn, g, prompt in zip(ep.turns, gen.generated, gen.prompts):
        start, end = turn.reply_span
        assert ep.token_ids[start:end] == g.token_ids and set(ep.action_mask[start:end]) == {1}
        assert turn.prompt_end == start - 1 and ep.token_ids[: turn.prompt_end + 1] == prompt
        assert ep.action_mask[turn.prompt_end] == 0 and turn.version == g.version


def chatml(user, reply=None):
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n" + (f"{reply}<|im_end|>" if reply else "")


def test_two_turn_episode_token_in_token_out(tok, sandbox):
    ep, gen = play(ADD, tok, sandbox, [WRONG_ADD, RIGHT_ADD])
    t1, t2 = ep.turns
    assert t1.code.endswith("return a - b\n") and not t1.public_passed and t1.public_statuses != ["pass"]
    assert t1.feedback.startswith("Your code failed the following tests:") and "assert add(1, 2) == 3" in t1.feedback
    assert t1.feedback.endswith(RETRY)
    assert t2.public_passed and t2.public_statuses == ["pass"] and t2.feedback == "" and t2.reply == RIGHT_ADD
    assert ep.private_verdict == "pass" and ep.private_statuses == ["pass", "pass"] and ep.solved
    second_prompt = tok.decode(gen.prompts[1])
    assert "Your code failed the following tests:" in second_prompt and "assert add(1, 2) == 3" in second_prompt
    # token_ids == prompt0 + reply1 + delta1 + reply2, the delta holding only the new user turn
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt0 = enc(tok.apply_chat_template([{"role": "user", "content": first_turn(ADD)}], tokenize=False,
                                          add_generation_prompt=True))
    delta1 = enc("\n" + chatml(t1.feedback))
    r1, r2 = (g.token_ids for g in gen.generated)
    assert ep.token_ids == prompt0 + r1 + delta1 + r2
    text = tok.decode(ep.token_ids)
    assert text.endswith(chatml(first_turn(ADD), WRONG_ADD) + "\n" + chatml(t1.feedback, RIGHT_ADD))
    assert rlef_rewards(ep, CFG) == [0.0, 1.0]


def test_invalid_turn_gets_no_code_feedback_and_penalty(tok, sandbox):
    ep, _ = play(ADD, tok, sandbox, [NO_CODE_REPLY, RIGHT_ADD])
    assert ep.turns[0].code is None and ep.turns[0].public_statuses == [] and ep.turns[0].feedback == NO_CODE
    assert ep.private_verdict == "pass" and rlef_rewards(ep, CFG) == [-0.2, 1.0]
    ep, _ = play(ADD, tok, sandbox, [WRONG_ADD, NO_CODE_REPLY], max_turns=2)  # invalid final turn: fail, no run
    assert ep.private_verdict == "fail" and ep.private_statuses == []
    assert rlef_rewards(ep, CFG) == [0.0, pytest.approx(-1.2)]


def test_max_turns_when_always_wrong(tok, sandbox):
    ep, gen = play(DOUBLE, tok, sandbox, [WRONG_DOUBLE, NO_CODE_REPLY, WRONG_DOUBLE, RIGHT_DOUBLE], max_turns=3)
    assert len(ep.turns) == 3 and len(gen.replies) == 1 and ep.turns[-1].feedback == ""
    assert "Expected output `6` but got `4`" in ep.turns[0].feedback
    assert ep.private_verdict == "fail" and ep.private_statuses == ["wrong_answer"]
    assert sum(rlef_rewards(ep, CFG)) == pytest.approx(-1.2)
    ep, _ = play(DOUBLE, tok, sandbox, [WRONG_DOUBLE], max_turns=1, spec=SamplingSpec(n=4))
    assert len(ep.turns) == 1 and ep.turns[0].feedback == "" and rlef_rewards(ep, CFG) == [-1.0]


def test_no_feedback_mode_says_only_retry(tok, sandbox):
    ep, gen = play(ADD, tok, sandbox, [WRONG_ADD, RIGHT_ADD], feedback="none")
    second_prompt = tok.decode(gen.prompts[1])
    assert ep.turns[0].feedback == RETRY and RETRY in second_prompt
    assert "failed the following tests" not in second_prompt and "add(1, 2)" not in second_prompt


def test_random_feedback_comes_from_another_problem(tok, sandbox):
    bank, rng = FeedbackBank(), random.Random(0)
    ep1, _ = play(DOUBLE, tok, sandbox, [WRONG_DOUBLE, RIGHT_DOUBLE], feedback="random", feedback_bank=bank, rng=rng)
    assert "Expected output `6` but got `4`" in ep1.turns[0].feedback  # nothing from another problem yet: real
    ep2, gen = play(ADD, tok, sandbox, [WRONG_ADD, RIGHT_ADD], feedback="random", feedback_bank=bank, rng=rng)
    assert ep2.turns[0].feedback == ep1.turns[0].feedback and "add(1, 2)" not in tok.decode(gen.prompts[1])
    assert [pid for pid, _ in bank.items] == ["double", "add"]  # real feedback is always recorded
    assert bank.sample("add", rng) == ep1.turns[0].feedback and FeedbackBank().sample("x", rng) is None


def test_reply_cut_by_length_gets_the_full_closing_tail(tok):
    conv = Conversation(tok)
    conv.start("hi")
    gen = asyncio.run(ScriptedGenerator(tok, ["partial"], eot=False).generate([], SamplingSpec()))[0]
    conv.add_reply(gen)
    delta = conv.add_user("go on")
    assert delta == tok("<|im_end|>\n" + chatml("go on"), add_special_tokens=False)["input_ids"]
    assert [m["role"] for m in conv.messages] == ["user", "assistant", "user"]


def test_template_without_assistant_turns_is_a_clear_error(tok):
    bad = copy.deepcopy(tok)
    bad.chat_template = "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}"
    conv = Conversation(bad)
    conv.start("hi")
    conv.add_reply(Generation([1, 2], [-0.1, -0.2], 0, "stop"))
    with pytest.raises(ValueError, match="cannot be extended turn by turn"):
        conv.add_user("again")


def test_infra_error_episode_is_dropped_not_scored(tok):
    async def broken_judge(problem, code, which):
        return Verdict("infra_error", [Result("infra_error", which == "public", "sandbox down")])

    ep = asyncio.run(run_episode(ADD, ScriptedGenerator(tok, [WRONG_ADD]), broken_judge, tok))
    assert len(ep.turns) == 1 and ep.turns[0].feedback == "" and ep.private_verdict == "infra_error"
    with pytest.raises(ValueError, match="infra error"):
        rlef_rewards(ep, CFG)


def test_episode_becomes_a_valid_learner_sample(tok, sandbox):
    from proctor.cluster.trajectory import to_sample
    from proctor.learner.batch import collate

    ep, gen = play(ADD, tok, sandbox, [NO_CODE_REPLY, WRONG_ADD, RIGHT_ADD])
    s = to_sample(ep, rlef_rewards(ep, CFG))
    s.validate()
    assert s.turn_rewards == [-0.2, 0.0, 1.0] and s.version == 7 and s.id == "add"
    b = collate([s], pad_id=0)
    for k, (turn, g) in enumerate(zip(ep.turns, gen.generated)):
        a, z = turn.reply_span
        assert b.token_turn[0, a:z].tolist() == [k] * (z - a)
        assert b.old_logprobs[0, a:z].tolist() == pytest.approx(g.logprobs)
        assert int(b.turn_ends[0, k]) == turn.prompt_end
    assert int((b.token_turn[0] >= 0).sum()) == sum(ep.action_mask)


def test_turn_cost_makes_a_first_attempt_solve_worth_more_than_a_recovered_one(tok, sandbox):
    """reward.turn_cost is paid by every turn that another attempt follows (an invalid one too, on top of
    its own penalty), never by the last: with it a retry can no longer be free."""
    cfg = CFG.model_copy(update={"turn_cost": -0.5})
    recovered, _ = play(ADD, tok, sandbox, [NO_CODE_REPLY, WRONG_ADD, RIGHT_ADD])
    first, _ = play(ADD, tok, sandbox, [RIGHT_ADD])
    assert rlef_rewards(recovered, cfg) == [-0.7, -0.5, 1.0]
    assert rlef_rewards(first, cfg) == [1.0]
    assert rlef_rewards(recovered, CFG) == [-0.2, 0.0, 1.0]   # 0 (the default) is RLEF's reward
    with pytest.raises(ValueError, match="turn_cost"):
        CFG.model_validate({"turn_cost": 0.5})


def test_repeat_cost_is_paid_by_a_turn_that_resubmits_code_already_run(tok, sandbox):
    """reward.repeat_cost: a retry whose code an earlier turn ran (and the feedback said failed) pays
    it, on top of anything else; a changed retry, a first attempt and an invalid turn do not."""
    cfg = CFG.model_copy(update={"repeat_cost": -0.3, "turn_cost": -0.5})
    repeated, _ = play(ADD, tok, sandbox, [WRONG_ADD, WRONG_ADD, NO_CODE_REPLY])
    changed, _ = play(ADD, tok, sandbox, [WRONG_ADD, NO_CODE_REPLY, RIGHT_ADD])
    assert repeated.turns[0].code == repeated.turns[1].code is not None
    assert rlef_rewards(repeated, cfg) == pytest.approx([-0.5, -0.8, -1.2])
    assert rlef_rewards(changed, cfg) == pytest.approx([-0.5, -0.7, 1.0])
    assert rlef_rewards(repeated, CFG) == [0.0, 0.0, -1.2]   # 0 (the default) is RLEF's reward
    with pytest.raises(ValueError, match="repeat_cost"):
        CFG.model_validate({"repeat_cost": 0.1})


def test_retry_kinds_name_what_each_retry_holds(tok, sandbox):
    """The held-out and training metrics sort every retry: changed code, a resubmission (what
    reward.repeat_cost charges), new code without the problem's function (the failing assertion copied
    back: how v11's policy dodged the repeat cost) and no code at all."""
    from proctor.cluster.metrics import episode_metrics, retry_kinds

    assertion_only = "```python\nassert add(1, 2) == 3\n```"
    other_wrong = "```python\ndef add(a, b):\n    return a * b\n```"
    ep, _ = play(ADD, tok, sandbox, [WRONG_ADD, WRONG_ADD, assertion_only, NO_CODE_REPLY, other_wrong], max_turns=5)
    assert ep.turns[2].code is not None and "def add" not in ep.turns[2].code
    assert retry_kinds([ep]) == {"changed": 1, "resubmitted": 1, "no_function": 1, "no_code": 1}
    m = episode_metrics([ep])
    assert [m[f"retry_{k}_frac"] for k in ("changed", "resubmitted", "no_function", "no_code")] == [0.25] * 4
    first, _ = play(ADD, tok, sandbox, [RIGHT_ADD])
    assert retry_kinds([first]) == dict.fromkeys(("changed", "resubmitted", "no_function", "no_code"), 0)
    stdin, _ = play(DOUBLE, tok, sandbox, [WRONG_DOUBLE, "```python\nprint(0)\n```"], max_turns=2)
    assert retry_kinds([stdin])["changed"] == 1   # no function to define: new code is a change


def test_repeat_scope_no_new_function_charges_every_retry_that_makes_no_new_attempt(tok, sandbox):
    """repeat_scope=no_new_function: a resubmission with only a comment added, a retry without code and one
    without the problem's function pay repeat_cost too; a changed function does not. The plain rule
    charges only the character-for-character resubmission."""
    strict = CFG.model_copy(update={"repeat_cost": -0.3, "repeat_scope": "no_new_function"})
    plain = CFG.model_copy(update={"repeat_cost": -0.3})
    commented = "```python\ndef add(a, b):\n    # check the sign\n    return a - b\n```"
    ep, _ = play(ADD, tok, sandbox, [WRONG_ADD, commented, "```python\nassert add(1, 2) == 3\n```", NO_CODE_REPLY,
                                     RIGHT_ADD], max_turns=5)
    assert ep.turns[1].code != ep.turns[0].code and ep.solved
    assert rlef_rewards(ep, strict) == pytest.approx([0.0, -0.3, -0.3, -0.5, 1.0])
    assert rlef_rewards(ep, plain) == pytest.approx([0.0, 0.0, 0.0, -0.2, 1.0])
    with pytest.raises(ValueError, match="repeat_scope"):
        CFG.model_validate({"repeat_scope": "anything"})


def test_retry_kind_survives_code_too_deep_for_the_parser():
    """A reply is untrusted text: an expression too deep for ast.parse / ast.dump is compared as text."""
    from types import SimpleNamespace as NS

    from proctor.reward.outcome import retry_kind

    deep = "x = " + "+".join(["a"] * 5000)
    assert retry_kind(NS(code=deep), [NS(code=deep)], "f") == "resubmitted"
    assert retry_kind(NS(code=deep + "\n"), [NS(code="def f(): pass")], "f") == "no_function"
