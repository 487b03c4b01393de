"""`proctor eval` end to end on a tiny random model: real vLLM engine, real sandbox."""

import json

import pytest

from proctor.cluster.cli import main


@pytest.mark.slow
def test_eval_cli_on_tiny_model(tiny_model_dir, tmp_path, capsys):
    out, also = tmp_path / "eval", tmp_path / "eval-mbpp"
    rc = main(["eval", "--dataset", "humaneval", "--out", str(out), "--model", str(tiny_model_dir), "--limit", "3",
               "--also", "mbpp397", "2", str(also), "--turns", "2", "--samples", "2", "--temperature", "1.0",
               "rollout.max_new_tokens=24", "rollout.max_model_len=1024", "rollout.kv_cache_gib=1",
               "data.skip=5", "data.limit=1"])  # the training source's slice: not the evaluation's
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["problems"] == 3 and metrics["rollouts_per_problem"] == 2 and metrics["max_turns"] == 2
    assert metrics["generated_tokens"] > 0 and metrics["errors"] == 0
    assert 0.0 < metrics["engine_busy_fraction"] <= 1.0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    # A random model writes no valid code: every turn is invalid, so each rollout uses both turns
    # (the second prompted by feedback), and nothing is solved.
    for r in rows:
        assert r["rollouts"] == 2 and r["solved"] == 0
        for ep in r["episodes"]:
            assert ep["private_verdict"] == "fail" and len(ep["turns"]) == 2
            assert not ep["turns"][0]["valid"] and ep["turns"][0]["feedback"]
    assert metrics["1@2"] == metrics["pass@1"] == metrics["rollout_pass@2"] == 0.0
    assert metrics["invalid_turns"] == 12 and metrics["turns_used"] == {"2": 6}
    assert "1@2" in (out / "report.md").read_text()
    # --also: a second dataset through the same engine, in the same batch, written apart
    other = json.loads((also / "metrics.json").read_text())
    assert other["dataset"] == "mbpp397" and other["problems"] == 2 and other["invalid_turns"] == 8
    assert [json.loads(line)["id"] for line in (also / "results.jsonl").read_text().splitlines()] == [
        "mbpp_464_check_value", "mbpp_224_count_Set_Bits"]
    assert other["engine_start_s"] == metrics["engine_start_s"] and metrics["evaluated_with"] == ["humaneval", "mbpp397"]


@pytest.mark.slow
def test_eval_serves_a_lora_adapter_exactly_as_trained(tiny_model_dir, tmp_path, capsys):
    """--adapter: the engine serves the base model plus a peft adapter through vLLM's LoRA support.
    Its greedy replies are those of the adapted network merged in fp32 and evaluated as a plain
    model, and they differ from the base model's."""
    from test_learner import hf_with
    from test_lora import trained_adapters
    from transformers import AutoTokenizer

    from proctor.learner.lora import merged_named, save_adapter

    model = trained_adapters(tiny_model_dir, rank=4, scale=0.3, seed=1)  # rank 4: served at vLLM's 8
    save_adapter(model, tmp_path / "adapter")
    merged = hf_with(tiny_model_dir, {k: v.numpy() for k, v in merged_named(model)})
    merged.save_pretrained(tmp_path / "merged")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "merged")

    def replies(name, *model_args):
        out = tmp_path / name
        rc = main(["eval", "--dataset", "humaneval", "--limit", "2", "--turns", "1", "--out", str(out), *model_args,
                   "rollout.max_new_tokens=16", "rollout.max_model_len=1024"])
        assert rc == 0
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        return [r["episodes"][0]["turns"][0]["reply"] for r in rows], json.loads((out / "metrics.json").read_text())

    base, _ = replies("base", "--model", str(tiny_model_dir))
    served, metrics = replies("served", "--model", str(tiny_model_dir), "--adapter", str(tmp_path / "adapter"))
    plain, _ = replies("merged", "--model", str(tmp_path / "merged"))
    assert served == plain and served != base
    assert metrics["adapter"] == str(tmp_path / "adapter")
    capsys.readouterr()
    assert main(["eval", "--model", str(tiny_model_dir), "--adapter", str(tmp_path / "merged")]) == 2
    assert "not a peft LoRA adapter dir (no adapter_config.json, adapter_model.safetensors)" in capsys.readouterr().out


def test_eval_cli_reports_bad_input_clearly(capsys):
    assert main(["eval", "--dataset", "no-such-dataset.jsonl"]) == 2
    assert "unknown dataset 'no-such-dataset.jsonl'" in capsys.readouterr().out
    assert main(["eval", "rollout.max_turns=x"]) == 2
    assert main(["eval", "--also", "no-such-dataset", "3", "out"]) == 2
    assert "unknown dataset 'no-such-dataset'" in capsys.readouterr().out
    assert main(["eval", "--also", "mbpp397", "all", "out"]) == 2
    assert "LIMIT must be a count" in capsys.readouterr().out


def test_pass_at_k_estimator():
    from proctor.cluster.rollouts import pass_at_k

    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)


def test_data_inspect_counts(capsys):
    assert main(["data", "inspect", "humaneval"]) == 0
    out = capsys.readouterr().out
    assert "164 problems" in out and "assert: 164" in out
