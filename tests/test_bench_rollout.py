"""``proctor bench rollout`` on the tiny model: the bare replays generate exactly the rollout's tokens."""

import json

import pytest


@pytest.mark.slow
def test_bench_rollout_replays_the_same_work(tiny_model_dir, capsys):
    from proctor.bench.rollout import main

    assert main(["--problems", "6", "--turns", "2", "--max-tokens", "16", f"model.name={tiny_model_dir}",
                 "rollout.kv_cache_gib=1", "rollout.max_model_len=1024"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ours, bare, by_turn = result["proctor_rollout"], result["bare_vllm"], result["bare_vllm_turn_by_turn"]
    assert ours["tokens"] == bare["tokens"] == by_turn["tokens"] > 0
    assert sum(ours["turns_by_index"]) == ours["turns"] and ours["turns_by_index"][0] == 6
    assert bare["batches"] == 1 and by_turn["batches"] == len([n for n in ours["turns_by_index"] if n])
    assert 0 < result["engine_busy_fraction"] <= 1.0
    for key in ("ratio_rollout_vs_bare", "ratio_rollout_vs_bare_turn_by_turn"):
        assert result[key] > 0
