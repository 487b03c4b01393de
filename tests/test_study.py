"""``proctor study``: arms trained and evaluated as subprocesses, the time budget, resuming, the report."""

import json
from pathlib import Path

import pytest

from cluster.cli import build_parser, main
from studies import study


def _args(argv: list[str]):
    return build_parser().parse_args(["study", "run", *argv])


def test_report_from_results_names_every_arm_and_its_fate(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    out.mkdir()
    (runs / "single-turn").mkdir(parents=True)
    (runs / "single-turn" / "metrics.jsonl").write_text("".join(
        json.dumps({"iteration": i, "reward_mean": -1.2 + 0.1 * i, "solve_rate": 0.0, "learner/kl_ref": 1e-4 * i,
                    "turns_mean": 1.0, "invalid_turn_frac": 0.75 - 0.25 * i}) + "\n" for i in (1, 2)))
    ev = {"dataset": "humaneval", "problems": 10, "max_turns": 3, "pass@1": 0.1, "1@3": 0.2, "invalid_turns": 4,
          "turns_used": {"1": 2, "3": 8}}
    rows = [
        {"arm": "base", "status": "done", "eval_s": 60, "eval": ev},
        {"arm": "multi-turn", "status": "failed", "stage": "train", "error": "boom\nValueError: bad thing"},
        {"arm": "single-turn", "status": "done", "iterations": 2, "overrides": ["learner.lr=1e-6"], "train_s": 100,
         "eval_s": 50, "summary": {"reward_first": -1.1, "reward_last": -1.0, "solve_rate_last": 0.0},
         "eval": {**ev, "pass@1": 0.2, "1@3": 0.3}},
        {"arm": "feedback-none", "status": "skipped", "reason": "time budget: 80 of 80 min used"},
    ]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = study.write_report(out, runs).read_text()
    table = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "0.100 | 0.200 | - | 4/26 |" in table["base"]  # 4 invalid of 2 x 1 + 8 x 3 turns
    assert "| 0.50 -> 0.25 |" in table["single-turn"]  # invalid turns, first -> last iteration
    assert "0.200 | 0.300 | 1 |" in table["single-turn"]  # 1@3 0.2 -> 0.3 of 10 problems: one more solved
    assert "One attempt per problem" in table["single-turn"]  # the switch, read from the arm's config
    assert "failed at train" in table["multi-turn"] and "bad thing" in table["multi-turn"]
    assert "skipped: time budget" in table["feedback-none"]
    assert "- single-turn: +1 problems at pass@1, +1 at 1@3 (of 10)." in text
    assert "sampled (nearly) the same training episodes" not in text  # one trained arm: nothing to compare

    # a second arm that sampled the same episodes (same start, within 1% after the updates) is called out
    (runs / "feedback-none").mkdir()
    (runs / "feedback-none" / "metrics.jsonl").write_text("".join(
        json.dumps({"iteration": i, "reward_mean": -1.0, "reply_tokens_mean": n}) + "\n"
        for i, n in ((1, 300.0), (2, 251.0))))
    (runs / "single-turn" / "metrics.jsonl").write_text("".join(
        json.dumps({"iteration": i, "reward_mean": -1.0, "reply_tokens_mean": n}) + "\n"
        for i, n in ((1, 300.0), (2, 250.0))))
    rows[-1] = {**rows[2], "arm": "feedback-none"}
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = study.write_report(out, runs).read_text()
    assert "- single-turn and feedback-none sampled (nearly) the same training episodes" in text
    (runs / "feedback-none" / "metrics.jsonl").write_text("".join(
        json.dumps({"iteration": i, "reward_mean": -1.0, "reply_tokens_mean": n}) + "\n"
        for i, n in ((1, 300.0), (2, 200.0))))
    assert "the same training episodes" not in study.write_report(out, runs).read_text()

    for png in ("training.png", "eval.png"):
        assert f"![{png}]({png})" in text
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_bad_arm_or_missing_prm_is_one_clear_error(tmp_path, capsys):
    assert main(["study", "run", "--out", str(tmp_path), "--arms", "multi-turn,nope"]) == 2
    assert "unknown arm(s) nope" in capsys.readouterr().out
    assert main(["study", "run", "--out", str(tmp_path), "--arms", "prm-dense", "--prm-model", str(tmp_path)]) == 2
    assert "the PRM arms need a trained PRM at" in capsys.readouterr().out
    assert not (tmp_path / "results.jsonl").exists()
    assert main(["study", "report", "--out", str(tmp_path / "none")]) == 2
    assert "results.jsonl not found: nothing to report yet" in capsys.readouterr().out.replace("\n", "")
    (tmp_path / "results.jsonl").write_text('{"arm": "base", "status": "done"}\n{"arm": oops}\n')
    assert main(["study", "report", "--out", str(tmp_path)]) == 2
    assert "results.jsonl line 2: not JSON" in capsys.readouterr().out.replace("\n", "")


@pytest.mark.slow
def test_study_trains_evaluates_resumes_and_keeps_to_its_budget(tiny_model_dir, tmp_path):
    from rich.console import Console

    out, runs = tmp_path / "reports", tmp_path / "runs"
    common = ["--out", str(out), "--runs", str(runs), "--iterations", "1", "--eval-limit", "2", "--eval-skip", "3",
              f"model.name={tiny_model_dir}", "rollout.max_new_tokens=24", "rollout.kv_cache_gib=1",
              "rollout.max_model_len=1024", "run.problems_per_iteration=2", "learner.minibatch_size=4"]
    a = _args([*common, "--arms", "single-turn", "--budget-min", "60"])
    assert study.check(a) is None and a.model == str(tiny_model_dir)
    assert study.run_study(a, Console()) == 0
    rows = study.latest(study._read_rows(out / "results.jsonl"))
    assert rows["base"]["status"] == "done", rows["base"].get("error")
    assert rows["single-turn"]["status"] == "done", rows["single-turn"].get("error")
    assert rows["base"]["eval"]["problems"] == 2 and rows["base"]["eval"]["max_turns"] == 3
    assert rows["single-turn"]["summary"]["iterations"] == 1
    arm = runs / "single-turn"
    assert (arm / "policy" / "model.safetensors").exists() and not (arm / "checkpoint").exists()
    assert json.loads((arm / "eval" / "metrics.json").read_text())["model"] == str(arm / "policy")
    # the switch held: one turn per training episode; the eval still gives every model 3 turns
    assert {r["turns_mean"] for r in study._metrics(arm)} == {1.0}

    # Rerun with a second arm and no budget left: the done arm is not redone, the new one is skipped.
    a = _args([*common, "--arms", "single-turn,feedback-none", "--budget-min", "0"])
    study.check(a)
    study.run_study(a, Console())
    all_rows = study._read_rows(out / "results.jsonl")
    assert [r["arm"] for r in all_rows] == ["base", "single-turn", "feedback-none"]
    assert all_rows[-1]["status"] == "skipped" and "time budget" in all_rows[-1]["reason"]
    report = (out / "report.md").read_text()
    assert "| single-turn |" in report and "skipped: time budget" in report
    assert Path(out / "training.png").exists() and Path(out / "eval.png").exists()


def test_background_start_passes_every_argument_on():
    a = _args(["--out", "o", "--runs", "r", "--arms", "single-turn,feedback-none", "--iterations", "2",
               "--budget-min", "12.5", "--eval-limit", "7", "--eval-skip", "3", "--eval-turns", "2", "--model", "m",
               "--prm-model", "p", "--keep-checkpoints", "learner.lr=1e-5", "rollout.max_turns=2"])
    again = _args(study.to_argv(a))
    assert vars(again) == vars(a)
    assert vars(_args(study.to_argv(_args([])))) == vars(_args([]))  # defaults survive too
