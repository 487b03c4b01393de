"""PSGPO end to end on the tiny model: label rows (scripted policy, real tokenizer, real sandbox),
``proctor prm train`` with DeepSpeed, the scoring actor, and the PRM as the critic's starting point."""

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from proctor.cluster.config import load_config
from proctor.cluster.prm import label_problem
from proctor.problems.format import Problem
from proctor.rollout.episode import local_judge
from proctor.rollout.types import Generation

ROOT = Path(__file__).resolve().parent.parent
SUM = Problem(id="sum3", prompt="Write sum3(a, b, c) returning a + b + c.", kind="assert", entry_point="sum3",
              public_tests=[{"code": "assert sum3(1, 2, 3) == 6"}],
              private_tests=[{"code": "assert sum3(0, 0, 1) == 1"}, {"code": "assert sum3(-1, 1, 5) == 5"}],
              time_limit_s=5.0, memory_mb=256)
HEAD = "Sure:\n```python\ndef sum3(a, b, c):\n    s = a\n    s += b\n"
GOOD_TAIL, BAD_LINE = "    s += c\n    return s\n```", "    s -= c\n"


class PrefixPolicy:
    """A scripted policy: the sampled response goes wrong at ``s -= c``; a completion passes
    exactly when its prefix does not contain that line yet (so line 5 is the first bad line)."""

    def __init__(self, tok):
        self.tok, self.calls = tok, []

    def ids(self, text):
        return self.tok(text, add_special_tokens=False)["input_ids"]

    async def generate(self, prompt_ids, spec):
        self.calls.append(spec.n)
        text = self.tok.decode(prompt_ids)
        done = text[text.rindex("<|im_start|>assistant\n") + len("<|im_start|>assistant\n"):]
        if not done:                                     # the first samples: the buggy response
            outs = [HEAD + BAD_LINE + "    return s\n```"] * spec.n
        elif BAD_LINE.strip() in done:                   # past the bug: nothing passes
            outs = ["    return s\n```"] * spec.n
        else:                                            # finish the function correctly from the prefix
            full = HEAD + GOOD_TAIL
            rest = full[full.index(done.rstrip(" ")) + len(done.rstrip(" ")):] if done.strip() else full
            outs = [rest] * spec.n
        return [Generation(self.ids(o), [0.0] * len(self.ids(o)), 0, "stop") for o in outs]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def label_rows(tok, sandbox, tiny_model_dir):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["prm.label.responses_per_problem=2", "prm.label.k=3"])
    policy, counts = PrefixPolicy(tok), Counter()
    rows = asyncio.run(label_problem(SUM, policy, local_judge(sandbox), tok, cfg, str(tiny_model_dir), counts))
    return rows, policy, counts


def test_label_rows_find_the_bug_line(label_rows):
    rows, policy, counts = label_rows
    assert len(rows) == 2 and counts["responses"] == 2
    r = rows[0]
    code = [i for i, k in enumerate(r["line_kinds"]) if k == "code"]
    assert [r["line_texts"][i] for i in code] == ["def sum3(a, b, c):", "    s = a", "    s += b", "    s -= c",
                                                  "    return s"]
    assert [r["labels"][i] for i in code] == [1, 1, 1, -1, -1]
    assert r["first_bad_line"] == code[3] and r["revised"] and not r["passed"]
    assert r["calls"] <= 3 and policy.calls[0] == 2 and set(policy.calls[1:]) == {3}
    assert all(r["labels"][i] == 0 for i, k in enumerate(r["line_kinds"]) if k != "code")
    # the stored token offsets are the lines' last tokens in the response ids
    assert r["line_last_tokens"][code[3]] < len(r["response_ids"])


@pytest.fixture(scope="module")
def prm_dir(label_rows, tiny_model_dir, tmp_path_factory):
    """``proctor prm train`` on the scripted rows (copied under 6 problem ids) with the tiny backbone."""
    return _prm_train(label_rows, tiny_model_dir, tmp_path_factory.mktemp("prm"), "prm.train.lr=1e-3")


def _prm_train(label_rows, tiny_model_dir, tmp_path: Path, *overrides: str) -> Path:
    rows, _, _ = label_rows
    labels = tmp_path / "labels.jsonl"
    # a few problems' worth of rows (copies under other ids), so a held-out split exists
    with open(labels, "w") as f:
        for i in range(6):
            for r in rows:
                f.write(json.dumps({**r, "problem_id": f"p{i}"}) + "\n")
    out = tmp_path / "prm"
    proc = subprocess.run([sys.executable, "-m", "proctor.cluster.cli", "prm", "train", "--config", "configs/tiny.yaml",
                           f"model.name={tiny_model_dir}", f"prm.train.labels={labels}", f"prm.train.out={out}",
                           "prm.train.epochs=6", "prm.train.batch_size=2", "prm.train.heldout_frac=0.34", *overrides],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_prm_train_score_and_critic_init(label_rows, prm_dir, tok):
    rows, _, _ = label_rows
    out = prm_dir
    meta = json.loads((out / "prm.json").read_text())
    assert meta["train_responses"] == 8 and meta["heldout_responses"] == 4 and meta["loss"] == "mse"
    losses = [json.loads(x)["loss"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 6 * 4 and sum(losses[-4:]) < 0.5 * sum(losses[:4])   # it learns the labels
    h = meta["heldout"]
    assert h["lines"] == 4 * 5 and h["line_accuracy"] > 0.7 and h["auc"] > 0.7   # same rows: learnable
    assert list((out / "tb").glob("events.out.tfevents.*"))

    from proctor.reward.actor import PRMScorer

    scorer = PRMScorer(out)
    r = rows[0]
    ids = r["prompt_ids"] + r["response_ids"]
    span = (len(r["prompt_ids"]), len(ids))
    [[scored]] = scorer.score([(ids, [span], None)])
    assert len(scored.scores) == sum(k == "code" for k in r["line_kinds"]) == 5
    assert all(-1 <= s <= 1 for s in scored.scores)
    assert [ln.last_token for ln in scored.code] == [t for t, k in zip(r["line_last_tokens"], r["line_kinds"])
                                                     if k == "code"]
    # reward.prm_dtype=bfloat16 (AMX): the same lines scored, to within bf16's rounding
    bf16 = PRMScorer(out, dtype="bfloat16")
    [[low]] = bf16.score([(ids, [span], None)])
    assert bf16.dtype == "bfloat16" and next(bf16.model.parameters()).dtype == torch.bfloat16
    assert low.scores == pytest.approx(scored.scores, abs=0.05) and low.scores != scored.scores

    # The learner's critic loads the PRM directory as is: same values at the line ends (mse: unclipped raw).
    from proctor.learner.model import ValueModel

    critic = ValueModel.from_pretrained(out)
    with torch.no_grad():
        v = critic(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]
    pos = [span[0] + ln.last_token for ln in scored.code]
    assert v[pos].clamp(-1, 1).tolist() == pytest.approx(scored.scores, abs=1e-5)
    assert v[pos].abs().max() > 0.05                                 # the head is not the zero init


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_prm_trains_lora_adapters_and_saves_a_plain_merged_dir(label_rows, tiny_model_dir, tok, tmp_path, dtype):
    """``prm.train.lora_rank``: the head and the adapters train, the backbone's own weights do not; the PRM
    dir holds the merged network (no adapter files), and reloaded it scores as the trained model did."""
    from safetensors.torch import load_file

    from proctor.reward.prm import PRM
    from proctor.reward.train import evaluate, load_labels, split

    out = _prm_train(label_rows, tiny_model_dir, tmp_path, "prm.train.lr=5e-3", "prm.train.lora_rank=8",
                     f"prm.train.dtype={dtype}")
    meta = json.loads((out / "prm.json").read_text())
    total = sum(t.numel() for t in load_file(str(out / "model.safetensors")).values()) + 129
    assert meta["lora_rank"] == 8 and meta["dtype"] == dtype and 0 < meta["trainable_params"] < total / 20
    losses = [json.loads(x)["loss"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert sum(losses[-4:]) < 0.5 * sum(losses[:4])                  # it learns the labels
    assert not list(out.glob("adapter_*")) and (out / "value_head.safetensors").exists()
    saved, base = load_file(str(out / "model.safetensors")), load_file(str(tiny_model_dir / "model.safetensors"))
    assert not any("lora" in k or "base_layer" in k for k in saved)
    assert {v.dtype for v in saved.values()} == {getattr(torch, dtype)}
    name = lambda k: k.removeprefix("model.")  # noqa: E731  (the causal LM's keys carry "model.")
    base = {name(k): v for k, v in base.items()}
    emb = "embed_tokens.weight"
    assert torch.equal(saved[emb], base[emb].to(saved[emb].dtype))  # frozen: not an adapted layer
    q = "layers.0.self_attn.q_proj.weight"
    assert not torch.equal(saved[q], base[q].to(saved[q].dtype))    # the adapter is merged in
    model = PRM.from_pretrained(out, dtype=dtype)
    _, held = split(load_labels(tmp_path / "labels.jsonl"), 0.34)
    again = evaluate(model, held, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    tol = 1e-6 if dtype == "float32" else 0.1  # the merged network is the adapted one (bf16: up to its rounding)
    assert again["lines"] == meta["heldout"]["lines"] > 0
    for k in ("line_accuracy", "auc"):
        assert abs(again[k] - meta["heldout"][k]) <= tol, (k, again, meta["heldout"])


def test_bad_label_file_names_row_and_field(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem_id": "x", "prompt_ids": [1], "response_ids": [2, 3],
                               "line_last_tokens": [5], "line_kinds": ["code"], "labels": [1.0], "passed": False,
                               "first_bad_line": None}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "proctor.cluster.cli", "prm", "train", "--config", "configs/tiny.yaml",
                           f"model.name={tiny_model_dir}", f"prm.train.labels={bad}", f"prm.train.out={tmp_path / 'o'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "bad.jsonl: row 0 (problem 'x'): field line_last_tokens: 5 outside the 2 response tokens" in " ".join(proc.stdout.split())


def test_process_rewards_shape_an_episode(ray_local, label_rows, prm_dir, tok):
    from proctor.reward.actor import PRMScorer, ProcessRewards
    from proctor.rollout.types import Episode, Turn

    rows, _, _ = label_rows
    r = rows[0]
    ids = r["prompt_ids"] + r["response_ids"]
    a = len(r["prompt_ids"])
    turn = Turn(reply="", code="x", public_statuses=[], public_passed=False, feedback="", version=0,
                prompt_end=a - 1, reply_span=(a, len(ids)))
    ep = Episode("sum3", ids, [0] * a + [1] * (len(ids) - a), [0.0] * len(ids), [turn], "fail")
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["reward.prm=true", f"reward.prm_model={prm_dir}",
                                                       "reward.prm_weight_correct=0.5", "reward.prm_weight_incorrect=0.25"])
    prm = ProcessRewards(cfg.reward, tok.get_vocab())
    try:
        [dense], metrics = prm([ep])
        ray_local.kill(prm.actor)  # a dead PRM actor is replaced and the batch scored again
        [again], metrics_after = prm([ep])
    finally:
        prm.shutdown()
    assert again == pytest.approx(dense) and metrics_after["prm/actors_replaced"] == 1 == prm.replaced
    [[scored]] = PRMScorer(prm_dir).score([(ids, [(a, len(ids))], None)])
    ends = [a + t for t, k in zip(r["line_last_tokens"], r["line_kinds"]) if k == "code"]
    assert [i for i, x in enumerate(dense) if x] == ends
    assert [dense[i] for i in ends] == pytest.approx([0.25 * s / 5 for s in scored.scores])   # failed: lambda-
    assert metrics["prm/dense_reward_mean"] == pytest.approx(sum(dense))


def test_prm_config_errors():
    from proctor.cluster.config import ConfigError

    with pytest.raises(ConfigError, match=r"need reward\.prm_model"):
        load_config(ROOT / "configs" / "tiny.yaml", ["reward.prm=true"])


@pytest.mark.slow
def test_train_with_prm_dense_reward_and_critic_init(ray_local, tiny_model_dir, prm_dir, tmp_path):
    from proctor.cluster.metrics import read_metrics
    from proctor.cluster.train import train

    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"model.name={tiny_model_dir}", "run.iterations=1",
                                                       "reward.prm=true", f"reward.prm_model={prm_dir}",
                                                       "reward.prm_critic_init=true", "learner.value_level=token"])
    train(cfg, tmp_path / "run")
    [row] = read_metrics(tmp_path / "run")
    assert row["episodes"] == 4 and row["learner/steps"] >= 1
    for key in ("prm/score_mean", "prm/dense_reward_mean", "code_lines_per_attempt", "comment_ratio"):
        assert key in row, key


@pytest.mark.slow
def test_prm_label_cli_runs_on_the_real_engine(tiny_model_dir, tmp_path):
    """The wiring of ``proctor prm label``: real vLLM engine actor, real sandbox pool, resumable output.
    (A random tiny model writes no fenced code, so there is nothing to search: the rows are counted.)"""
    out = tmp_path / "labels.jsonl"
    args = [sys.executable, "-m", "proctor.cluster.cli", "prm", "label", "--config", "configs/tiny.yaml",
            f"model.name={tiny_model_dir}", "prm.label.problems=2", "prm.label.responses_per_problem=2",
            "prm.label.k=2", "prm.label.max_new_tokens=16", f"prm.label.out={out}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["this_run"]["responses"] == 4
    assert summary["rows"] + summary["this_run"].get("no_code_or_infra", 0) == 4
    assert "PRM labels" in proc.stdout


def test_revised_only_keeps_failed_responses_with_a_fixable_prefix(tok, sandbox, tiny_model_dir):
    import io

    from proctor.cluster.prm import _label_all

    class Passing(PrefixPolicy):
        async def generate(self, prompt_ids, spec):
            out = self.ids(HEAD + GOOD_TAIL)
            return [Generation(out, [0.0] * len(out), 0, "stop")] * spec.n

    for policy, kept in ((PrefixPolicy(tok), 2), (Passing(tok), 0)):
        for revised_only, expect in ((True, kept), (False, 2)):
            cfg = load_config(ROOT / "configs" / "tiny.yaml", ["prm.label.k=2",
                                                               f"prm.label.revised_only={str(revised_only).lower()}"])
            f, counts, advanced = io.StringIO(), Counter(), []
            asyncio.run(_label_all([SUM], policy, local_judge(sandbox), tok, cfg, "ckpt", counts, f,
                                   lambda advanced=advanced: advanced.append(1)))
            rows = [json.loads(x) for x in f.getvalue().splitlines()]
            assert len(rows) == expect and counts["rows_seen"] == 2 and advanced == [1]
            assert all(r["revised"] for r in rows) or not revised_only
