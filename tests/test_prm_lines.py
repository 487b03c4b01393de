"""PSGPO building blocks: line classification, exact line -> token mapping, binary search, dense shaping."""

import asyncio
import math

import pytest

from proctor.reward.label import first_unfixable, label_response
from proctor.reward.lines import Line, classify, reply_lines
from proctor.reward.shaping import ReplyScores, dense_rewards, line_stats

REPLY = ("Here is the function:\n"
         "```python\n"
         "def total(xs):\n"
         "    # running sum\n"
         "    s = 0\n"
         "\n"
         "    for x in xs:\n"
         "        s += x  # add it\n"
         "    return s\n"
         "```\n"
         "It loops once. ```js\nlet a = 1\n```")


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def test_classify_kinds():
    kinds = [k for _, k in classify(REPLY)]
    assert kinds == ["prose", "prose", "code", "comment", "code", "blank", "code", "code", "code", "prose",
                     "prose", "prose", "prose"]  # js block stays prose; a trailing comment keeps a code line code


def test_no_fence_means_no_code_lines():
    assert {k for _, k in classify("def f():\n    return 1\n")} == {"prose"}


@pytest.mark.parametrize("text", [REPLY, "```python\nif x:\n    y = (1,\n         2)\n\n\nprint(y)\n```",
                                  "```\nx = 'héllo'\nprint(x)\n```"])
def test_line_last_token_is_exact_and_minimal(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    lines = reply_lines(tok, ids)
    assert [ln.text for ln in lines] == text.split("\n")
    start = 0
    for ln in lines:
        end = start + len(ln.text)
        if ln.text:
            seen = tok.decode(ids[: ln.last_token + 1])
            assert seen[:end] == text[:end]                                 # the whole line is visible ...
            assert len(tok.decode(ids[: ln.last_token])) < end              # ... and not one token earlier
        else:
            assert ln.last_token == -1
        start = end + 1


def test_token_spanning_a_newline_maps_to_the_line_it_ends(tok):
    text = "```python\ndef f():\n    return 1\n```"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    lines = reply_lines(tok, ids)
    pieces = [tok.decode([i]) for i in ids]
    # the token holding "):" also completes line 1; whatever it carries past the newline does not matter
    assert "):" in pieces[lines[1].last_token] or pieces[lines[1].last_token].endswith(":")


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("num_lines", [1, 2, 3, 7, 8, 20, 33])
def test_binary_search_finds_the_first_unfixable_prefix_in_log_calls(num_lines):
    for m_star in range(num_lines + 1):   # fixable(m) iff m < m_star; m = T is the failing response
        asked = []

        async def fixable(m, asked=asked, m_star=m_star):
            asked.append(m)
            return m < m_star

        got, calls = run(first_unfixable(num_lines, fixable))
        assert got == m_star
        assert calls == len(asked) <= math.ceil(math.log2(num_lines + 1))
        assert num_lines not in asked                       # the full response is never re-checked


def test_passing_response_needs_no_search():
    async def fixable(m):
        raise AssertionError("must not be called")

    assert run(first_unfixable(5, fixable, full_passes=True)) == (6, 0)


def lines_of(kinds):
    return [Line(i, f"l{i}", k, i) for i, k in enumerate(kinds)]


def test_labels_around_the_first_bad_line():
    lines = lines_of(["prose", "code", "comment", "code", "code", "blank", "code", "prose"])

    async def fixable(m):          # code lines 1 and 2 can be completed into a pass, line 3 cannot
        return m < 3

    lab = run(label_response(lines, False, fixable))
    assert lab.labels == [0, 1, 0, 1, -1, 0, -1, 0]
    assert lab.first_bad_line == 4 and lab.fixable_prefix == 2 and lab.revised
    assert lab.calls <= 3 and set(lab.checks) <= {0, 1, 2, 3}


def test_unfixable_from_the_start_and_passing():
    lines = lines_of(["code", "code"])

    async def never(m):
        return False

    lab = run(label_response(lines, False, never))
    assert lab.labels == [-1, -1] and lab.first_bad_line == 0 and not lab.revised

    async def boom(m):
        raise AssertionError

    lab = run(label_response(lines, True, boom))
    assert lab.labels == [1, 1] and lab.first_bad_line is None and lab.calls == 0


# --- dense shaping and reward-hacking guards ----------------------------------------------------------

def reply(start, kinds, scores):
    return ReplyScores(start, lines_of(kinds), scores)


def test_dense_reward_is_lambda_times_score_over_code_lines():
    r = reply(10, ["prose", "code", "comment", "code"], [0.5, -1.0])
    out = dense_rewards(20, [r], solved=True, weight_correct=0.2, weight_incorrect=0.4)
    assert out[11] == pytest.approx(0.2 * 0.5 / 2) and out[13] == pytest.approx(0.2 * -1.0 / 2)
    assert sum(1 for x in out if x) == 2
    out = dense_rewards(20, [r], solved=False, weight_correct=0.2, weight_incorrect=0.4)
    assert out[11] == pytest.approx(0.4 * 0.5 / 2)


def test_extra_comments_earn_nothing():
    plain = reply(0, ["code", "code"], [0.6, -0.2])
    padded = reply(0, ["code", "comment", "comment", "blank", "comment", "code"], [0.6, -0.2])
    for solved in (True, False):
        a = sum(dense_rewards(10, [plain], solved, 0.1, 0.3))
        b = sum(dense_rewards(10, [padded], solved, 0.1, 0.3))
        assert b == pytest.approx(a)


def test_extra_lines_do_not_raise_the_total():
    short = reply(0, ["code", "code"], [0.8, 0.4])
    repeated = reply(0, ["code"] * 8, [0.8, 0.4] * 4)     # the same lines, four times over
    total = sum(dense_rewards(20, [short], True, 0.1, 0.1))
    assert sum(dense_rewards(20, [repeated], True, 0.1, 0.1)) == pytest.approx(total)
    longest = reply(0, ["code"] * 50, [1.0] * 50)           # bounded by lambda, whatever the length
    assert sum(dense_rewards(60, [longest], True, 0.1, 0.1)) == pytest.approx(0.1)


def test_score_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 code lines but 1 scores"):
        dense_rewards(5, [reply(0, ["code", "code"], [0.1])], True, 0.1, 0.1)


def test_line_stats():
    s = line_stats([reply(0, ["code", "comment", "code"], [1.0, 0.0]), reply(5, ["code", "prose"], [0.5])])
    assert s["code_lines_per_attempt"] == 1.5 and s["comment_ratio"] == pytest.approx(1 / 4)
    assert s["score_mean"] == pytest.approx(0.5)


def test_auc_by_hand():
    from proctor.reward.prm import auc

    assert auc([0.9, 0.8, 0.1], [1, 1, -1]) == 1.0
    assert auc([0.1, 0.9], [1, -1]) == 0.0
    assert auc([0.5, 0.5, 0.7, 0.2], [1, -1, 1, -1]) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert math.isnan(auc([0.3], [1]))


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_prm_losses_and_score_range(loss):
    import torch
    from transformers import LlamaConfig, LlamaModel

    from proctor.reward.prm import PRM

    torch.manual_seed(0)
    model = PRM(LlamaModel(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=1)), loss)
    raw = torch.tensor([[3.0, -0.5, 0.2]])
    labels, mask = torch.tensor([[1.0, -1.0, 0.0]]), torch.tensor([[True, True, False]])
    score = model.to_score(raw)
    if loss == "mse":
        assert score[0].tolist() == pytest.approx([1.0, -0.5, 0.2])               # clipped raw output
        assert model.loss(raw, labels, mask).item() == pytest.approx(((3 - 1) ** 2 + (-0.5 + 1) ** 2) / 2)
    else:
        assert score[0].tolist() == pytest.approx([2 * torch.sigmoid(torch.tensor(v)).item() - 1 for v in (3.0, -0.5, 0.2)])
        expect = -(math.log(torch.sigmoid(torch.tensor(3.0)).item()) + math.log(1 - torch.sigmoid(torch.tensor(-0.5)).item())) / 2
        assert model.loss(raw, labels, mask).item() == pytest.approx(expect, rel=1e-5)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert model(ids, torch.ones_like(ids)).shape == (1, 4)


SHAPES = [
    REPLY,
    "Here is the fix: ```python\ndef f(x):\n    return x + 1\n```\nDone.",                   # fence opens mid-line
    "```py\ndef f(x):\n    # one more\n    return x + 1\n```",                                # py tag
    "```python\ndef f(x):\n    return x + 1\n",                                               # never closed
    "```python\ndef helper():\n    return 2\n```\nthen\n```python\ndef f(x):\n    return helper() + x\n```",
    "```python\ndef f(x:\n    return\n```\n```python\ndef f(x):\n    return x\n```",           # first one broken
    "```python\ndef f(x):\n    s = 'a ``` inside'\n    return s\n```",                        # a fence in a string
    "```python\ndef f(x):\n    return x```\nand prose",                                       # closed mid-line
    "no code at all: def f(x): return x",
]


@pytest.mark.parametrize("reply", SHAPES)
def test_prm_lines_are_exactly_the_code_that_runs(reply):
    """The sandbox and the PRM read a reply with one grammar: the code lines (with comments and blanks)
    are the lines of the code the sandbox runs, and nothing else."""
    from proctor.sandbox_pool.code import extract_code

    code = extract_code(reply, "f")
    inside = [line for line, kind in classify(reply, "f") if kind != "prose"]
    if code is None:
        assert inside == []
    else:  # the lines, joined, are the code (the last one may go on past a fence that closes mid-line)
        joined, expected = "\n".join(inside), code[:-1] if code.endswith("\n") else code
        assert joined.startswith(expected) and joined[len(expected):] in ("", "```"), (joined, expected)
        assert any(kind == "code" for _, kind in classify(reply, "f"))
