"""``proctor study``: arms trained and evaluated as subprocesses, the time budget, resuming, the report."""

import json
from pathlib import Path

import pytest

from proctor.cluster.cli import build_parser, main
from proctor.cluster.config import CONFIG_DIR, load_config
from proctor.studies import study, study_report
from proctor.studies.stats import groups_exact, mcnemar_exact
from proctor.studies.study_seeds import seeds_results, write_seeds_report


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
    main = text.split("## Retries at evaluation")[0]  # the arms' table (the retry table names the arms too)
    table = {line.split("|")[1].strip(): line for line in main.splitlines() if line.startswith("| ")}
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
    rows = study.latest(study.read_rows(out / "results.jsonl"))
    assert rows["base"]["status"] == "done", rows["base"].get("error")
    assert rows["single-turn"]["status"] == "done", rows["single-turn"].get("error")
    assert rows["base"]["eval"]["problems"] == 2 and rows["base"]["eval"]["max_turns"] == 3
    assert rows["single-turn"]["summary"]["iterations"] == 1
    arm = runs / "single-turn"
    assert (arm / "policy" / "model.safetensors").exists() and not (arm / "checkpoint").exists()
    assert json.loads((arm / "eval" / "metrics.json").read_text())["model"] == str(arm / "policy")
    # the switch held: one turn per training episode; the eval still gives every model 3 turns
    assert {r["turns_mean"] for r in study_report._metrics(arm)} == {1.0}

    # Rerun with a second arm and no budget left: the done arm is not redone, the new one is skipped.
    a = _args([*common, "--arms", "single-turn,feedback-none", "--budget-min", "0"])
    study.check(a)
    study.run_study(a, Console())
    all_rows = study.read_rows(out / "results.jsonl")
    assert [r["arm"] for r in all_rows] == ["base", "single-turn", "feedback-none"]
    assert all_rows[-1]["status"] == "skipped" and "time budget" in all_rows[-1]["reason"]
    report = (out / "report.md").read_text()
    assert "| single-turn |" in report and "skipped: time budget" in report
    assert Path(out / "training.png").exists() and Path(out / "eval.png").exists()


def test_a_rerun_reuses_finished_stages_and_refuses_a_run_dir_of_another_config(tiny_model_dir, tmp_path):
    """Run dirs copied from a finished run (the base evaluation, a trained and evaluated arm) are reused
    without a subprocess; a run dir trained under another arm's config is an error naming it."""
    import shutil

    from rich.console import Console

    out, runs = tmp_path / "reports", tmp_path / "runs"
    common = ["--runs", str(runs), "--iterations", "1", "--eval-limit", "2", "--eval-skip", "3",
              f"model.name={tiny_model_dir}", "rollout.max_new_tokens=24", "rollout.kv_cache_gib=1",
              "rollout.max_model_len=1024", "run.problems_per_iteration=2", "learner.minibatch_size=4"]
    a = _args([*common, "--out", str(out), "--arms", "single-turn"])
    assert study.check(a) is None and study.run_study(a, Console()) == 0
    first = study.latest(study.read_rows(out / "results.jsonl"))
    assert first["single-turn"]["status"] == "done" and "reused" not in first["single-turn"]
    log = runs / "single-turn" / "log.txt"
    logged = log.read_text()

    out2 = tmp_path / "reports2"
    a = _args([*common, "--out", str(out2), "--arms", "single-turn"])
    assert study.check(a) is None and study.run_study(a, Console()) == 0
    rows = study.latest(study.read_rows(out2 / "results.jsonl"))
    assert rows["base"]["reused"] and rows["single-turn"]["reused"] and rows["single-turn"]["status"] == "done"
    assert log.read_text() == logged  # neither trained nor evaluated again
    assert rows["single-turn"]["train_s"] == first["single-turn"]["train_s"] > 0  # the run's own time
    assert rows["single-turn"]["eval"] == first["single-turn"]["eval"]
    assert rows["base"]["eval_s"] == first["base"]["eval_s"] > 0  # the reused evaluation's own time

    shutil.copytree(runs / "single-turn", runs / "feedback-none")  # a single-turn run posing as another arm
    a = _args([*common, "--out", str(out2), "--arms", "feedback-none"])
    error = study.check(a)
    assert error and str(runs / "feedback-none" / "config.yaml") in error and "another config" in error


def test_arm_stage_trains_resumes_or_keeps(tmp_path):
    run = tmp_path / "arm"
    assert study.arm_stage(run) == "training"
    (run / "checkpoint").mkdir(parents=True)
    (run / "log.txt").write_text("killed before its first checkpoint")
    assert study.arm_stage(run) == "training" and not run.exists()  # nothing to resume: cleared
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "driver.json").write_text("{}")
    assert study.arm_stage(run) == "training, resumed"
    (run / "policy").mkdir()
    (run / "policy" / "config.json").write_text("{}")
    assert study.arm_stage(run) == "trained"


def test_background_start_passes_every_argument_on():
    a = _args(["--out", "o", "--runs", "r", "--arms", "single-turn,feedback-none", "--iterations", "2",
               "--recipe", "configs/learn-cpu.yaml",
               "--budget-min", "12.5", "--eval-limit", "7", "--eval-skip", "3", "--eval-turns", "2", "--model", "m",
               "--prm-model", "p", "--keep-checkpoints", "learner.lr=1e-5", "rollout.max_turns=2"])
    again = _args(study.to_argv(a))
    assert vars(again) == vars(a)
    assert vars(_args(study.to_argv(_args([])))) == vars(_args([]))  # defaults survive too


def test_arms_on_a_recipe_are_the_recipe_plus_their_switch(tmp_path):
    recipe = str(CONFIG_DIR / "learn-cpu.yaml")
    a = _args(["--recipe", recipe, "--iterations", "5", "--prm-model", str(tmp_path), "rollout.max_new_tokens=256"])
    (tmp_path / "value_head.safetensors").write_bytes(b"")
    assert study.check(a) is None and a.model == "qwen2.5-coder-0.5b-instruct"  # every arm's config is valid
    random = study.arm_overrides(a, "feedback-random")
    assert not any(o.startswith(("run.out_dir=", "learner.lr=")) for o in random)  # the recipe's own lr stays
    cfg = load_config(recipe, random)
    own = load_config(recipe).learner  # the switch changes the feedback alone: the recipe's learner stays
    assert cfg.rollout.feedback == "random" and cfg.learner.lora_rank == 16 and cfg.learner == own
    assert cfg.run.iterations == 5 and cfg.rollout.max_new_tokens == 256 and cfg.run.save_policy
    critic = load_config(recipe, study.arm_overrides(a, "prm-dense-critic"))
    assert critic.learner.advantage == "gae" and critic.reward.prm_critic_init  # a critic to initialise
    # the report's "what it changes" shows the PRM it trained with (--prm-model), not the arm file's default
    row = {"recipe": recipe, "switch": study.arm_switch("prm-dense-critic"),
           "overrides": study.arm_overrides(a, "prm-dense-critic")}
    what = study_report._what("prm-dense-critic", row)
    assert f"`reward.prm_model={tmp_path}`" in what and "runs/prm/model" not in what
    assert "`reward.prm_critic_init=true`" in what
    assert load_config(recipe, study.arm_overrides(a, "single-turn")).rollout.max_turns == 1
    # the default recipe (configs/local.yaml) keeps the short-run lr that its 50-step warm-up needs
    local = study.arm_overrides(_args([]), "single-turn")
    assert "learner.lr=1e-6" in local and "learner.warmup_steps=0" in local
    bad = _args(["--recipe", recipe, "--arms", "single-turn", "learner.lora_rank=8", "learner.zero_stage=3"])
    assert "zero_stage=3" in study.check(bad)


def _eval_dir(path: Path, first: list[bool], final: list[bool]) -> None:
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"max_turns": 3}))
    (path / "results.jsonl").write_text("".join(
        json.dumps({"id": f"P/{i}", "first_turn_solved": int(f), "solved": int(s)}) + "\n"
        for i, (f, s) in enumerate(zip(first, final))))


def test_report_pairs_each_arm_with_base_and_the_papers_claims(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    out.mkdir()
    n = 20
    _eval_dir(runs / "base" / "eval", [i < 5 for i in range(n)], [i < 5 for i in range(n)])
    _eval_dir(runs / "multi-turn" / "eval", [i < 6 for i in range(n)], [i < 13 for i in range(n)])  # 1@3 +8
    _eval_dir(runs / "feedback-random" / "eval", [i < 5 for i in range(n)], [1 <= i < 6 for i in range(n)])
    ev = {"dataset": "humaneval", "problems": n, "max_turns": 3, "pass@1": 0.25, "1@3": 0.25}
    done = {"status": "done", "iterations": 1, "overrides": [], "train_s": 1, "eval_s": 1, "summary": {}}
    rows = [{"arm": "base", "status": "done", "eval_s": 1, "eval": ev},
            {"arm": "multi-turn", **done, "eval": {**ev, "pass@1": 0.3, "1@3": 0.65, "recovered_by_feedback": 7,
                                                   "retries": {"changed": 9, "resubmitted": 2, "no_function": 1,
                                                               "no_code": 0}, "generated_tokens": 1234}},
            {"arm": "feedback-random", **done, "eval": {**ev, "1@3": 0.25}}]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = study.write_report(out, runs).read_text()
    assert "| multi-turn | base | 5 -> 6 (+1 / -0, p = 1) | 5 -> 13 (+8 / -0, p = 0.00781) |" in text
    assert "| feedback-random | base | 5 -> 5 (+0 / -0, p = 1) | 5 -> 5 (+1 / -1, p = 1) |" in text
    assert ("- real execution feedback beats random feedback (RLEF): multi-turn is ahead of feedback-random "
            "(feedback-random -> multi-turn: 5 -> 13 (+8 / -0, p = 0.00781); p < 0.05).") in text
    assert "single-turn" not in text.split("## Paired per problem")[1]  # a claim needs both arms
    assert "| multi-turn | 7 | 9 / 2 / 1 / 0 | 1234 |" in text and "| base | - | - | - |" in text  # retries
    assert "Training: each arm is `configs/ablations/ARM.yaml`" in text  # rows from before --recipe

    # an arm evaluated on other problems (a rerun with other --eval-* flags) is named and left out
    _eval_dir(runs / "feedback-none" / "eval", [True] * 30, [True] * 30)
    recipe = {"recipe": "configs/learn-cpu.yaml", "switch": ["rollout.feedback=none"], "shared": ["run.iterations=6"]}
    rows.append({"arm": "feedback-none", **done, **recipe, "eval": {**ev, "problems": 30}})
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = study.write_report(out, runs).read_text()
    assert "Left out, evaluated on other problems or turns than the untrained model: feedback-none." in text
    assert "| feedback-none | base |" not in text and "multi-turn is ahead of feedback-random" in text
    assert "| feedback-none | `rollout.feedback=none` | 1 |" in text  # on a recipe: the switch itself


# proctor study seeds: the arms of several one-seed studies paired over all seeds; the exact test behind it.
T, F = True, False


def test_groups_exact_is_mcnemar_one_against_one_and_by_hand_two_against_two():
    a = {"x": T, "y": T, "z": F, "w": T}
    b = {"x": F, "y": F, "z": T, "w": T}
    g = groups_exact([a], [b])
    assert g["p_value"] == pytest.approx(mcnemar_exact(2, 1)) and g["diff"] == 1 and (g["a_mean"], g["b_mean"]) == (3, 2)
    swapped = groups_exact([b], [a])
    assert swapped["p_value"] == g["p_value"] and swapped["diff"] == -1
    # two problems, each passed by both of A's evaluations and neither of B's: per problem P(both passes in A)
    # = 1/6 and P(both in B) = 1/6, so |T| >= observed only when both problems are extreme the same way: 2/36
    two = groups_exact([{"x": T, "y": T}] * 2, [{"x": F, "y": F}] * 2)
    assert two["p_value"] == pytest.approx(2 / 36) and two["diff"] == 2
    assert groups_exact([{"x": T}], [{"x": T}, {"x": T}])["p_value"] == 1.0  # all agree: nothing to test
    with pytest.raises(ValueError, match="same problems"):
        groups_exact([{"x": T}], [{"y": T}])
    with pytest.raises(ValueError, match="at least one"):
        groups_exact([], [{"x": T}])


def _study(runs, base, arms: dict[str, tuple[list, list]]):
    _eval_dir(runs / "base" / "eval", *base)
    for arm, (first, final) in arms.items():
        _eval_dir(runs / arm / "eval", first, final)


def test_seeds_pair_arms_over_every_seed_and_the_claims(tmp_path):
    base = ([T, F, F, F, F, F], [T, F, F, F, F, F])
    s0, s1 = tmp_path / "s0", tmp_path / "s1"
    _study(s0, base, {"multi-turn": ([T, T, F, F, F, F], [T, T, T, T, F, F]),  # 2 recovered by feedback
                      "feedback-random": ([T, F, F, F, F, F], [T, F, F, F, F, F])})
    _study(s1, base, {"multi-turn": ([T, F, T, F, F, F], [T, F, T, T, T, F])})  # only one arm on this seed
    (s1 / "feedback-none").mkdir()  # trained, not evaluated: left out
    res = seeds_results([s0, s1], tmp_path / "out")
    multi = res["arms"]["multi-turn"]
    assert multi["seeds"] == [None, None] and multi["recovered"] == [2, 2]  # no saved config: seed unknown
    assert multi["pass@1"]["per_seed"] == [2, 2] and multi["1@3"]["per_seed"] == [4, 4]
    assert multi["1@3"]["p_value"] == pytest.approx(groups_exact(
        [{f"P/{i}": v for i, v in enumerate(f)} for f in ([T, T, T, T, F, F], [T, F, T, T, T, F])],
        [{f"P/{i}": v for i, v in enumerate(base[1])}])["p_value"])
    assert "feedback-none" not in res["arms"] and res["arms"]["feedback-random"]["seeds"] == [None]
    (claim,) = res["claims"]
    assert (claim["arm"], claim["against"], claim["seeds"]) == ("multi-turn", "feedback-random", [[None, None], [None]])
    assert claim["1@3"]["a_mean"] == 4 and claim["1@3"]["b_mean"] == 1
    report = write_seeds_report(tmp_path / "out", [s0, s1]).read_text()
    assert "| multi-turn | ?, ? | 2.0 (2 / 2; p = " in report and "multi-turn (seeds ?, ?) is ahead of feedback-random" in report
    assert json.loads((tmp_path / "out" / "results.json").read_text())["base"] == {"pass@1": 1, "1@3": 1}
    assert (tmp_path / "out" / "eval.png").stat().st_size > 0 and "![eval.png](eval.png)" in report


def test_seeds_refuse_another_untrained_evaluation_naming_the_dir(tmp_path, capsys):
    s0, s1 = tmp_path / "s0", tmp_path / "s1"
    _study(s0, ([T, F], [T, F]), {"multi-turn": ([T, T], [T, T])})
    _study(s1, ([F, F], [F, F]), {"multi-turn": ([T, T], [T, T])})
    assert main(["study", "seeds", "--runs", f"{s0},{s1}", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().out
    assert f"{s1 / 'base' / 'eval'}" in err and "another untrained evaluation" in err
    assert not (tmp_path / "out").exists()  # nothing half written
    (s1 / "base" / "eval" / "metrics.json").unlink()
    assert main(["study", "seeds", "--runs", f"{s0},{s1}", "--out", str(tmp_path / "out")]) == 2
    assert "no untrained evaluation" in capsys.readouterr().out


def test_seeds_refuse_one_seed_counted_twice(tmp_path, capsys):
    s0, s1 = tmp_path / "s0", tmp_path / "s1"
    for d in (s0, s1):
        _study(d, ([T, F], [T, F]), {"multi-turn": ([T, T], [T, T])})
    (s0 / "multi-turn" / "config.yaml").write_text("run:\n  seed: 0\n")
    (s1 / "multi-turn" / "config.yaml").write_text("run:\n  seed: 1\n")
    assert seeds_results([s0, s1], tmp_path / "out")["arms"]["multi-turn"]["seeds"] == [0, 1]
    (s1 / "multi-turn" / "config.yaml").write_text("run:\n  seed: 0\n")  # the same seed trained twice
    assert main(["study", "seeds", "--runs", f"{s0},{s1}", "--out", str(tmp_path / "out")]) == 2
    assert f"{s1 / 'multi-turn'}: arm multi-turn trained with run.seed=0" in capsys.readouterr().out
    assert main(["study", "seeds", "--runs", f"{s0},{s0}/", "--out", str(tmp_path / "out")]) == 2
    assert "names a run dir twice" in capsys.readouterr().out
    (s0 / "base" / "eval" / "results.jsonl").write_text('{"id": "P/0"}\n')  # a bad row: named, no traceback
    assert main(["study", "seeds", "--runs", f"{s0}", "--out", str(tmp_path / "out")]) == 2
    assert "results.jsonl: every row needs id, first_turn_solved, solved" in capsys.readouterr().out
