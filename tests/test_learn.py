"""The learning recipe's statistics and report (on synthetic evaluations), and dynamic sampling."""

import json
import math

import pytest

from proctor.learner.batch import Sample, informative
from proctor.studies.learn import one_return, write_report
from proctor.studies.stats import all_seeds_exact, mcnemar_exact, net_needed, paired, seed_power


def test_mcnemar_exact_by_hand():
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)         # 6 gained, none lost: p = 0.031
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)         # 5 vs 0 is not significant
    assert mcnemar_exact(3, 1) == pytest.approx(2 * 5 / 16)     # (C(4,0) + C(4,1)) / 2^4, two-sided
    assert mcnemar_exact(1, 3) == mcnemar_exact(3, 1)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 10) == 1.0


def test_paired_counts_gains_and_losses_and_refuses_other_problems():
    base = {"a": True, "b": False, "c": False, "d": True}
    trained = {"a": True, "b": True, "c": True, "d": False}
    p = paired(base, trained)
    assert (p["base"], p["trained"], p["gained"], p["lost"]) == (2, 3, ["b", "c"], ["d"])
    assert p["p_value"] == pytest.approx(mcnemar_exact(2, 1))
    with pytest.raises(ValueError, match="same problems"):
        paired(base, {"a": True})


def test_net_needed_and_seed_power_by_hand():
    assert net_needed(5) is None and net_needed(6) == 6       # 6 / 0 is the first significant split
    assert net_needed(21) == 11                               # 16 / 5: p = 0.027; 15 / 6: p = 0.078
    assert mcnemar_exact(16, 5) < 0.05 < mcnemar_exact(15, 6)
    assert seed_power(6, 1.0) == 1.0 and seed_power(5, 1.0) == 0.0
    assert seed_power(6, 0.5) == pytest.approx(1 / 64)        # only 6 / 0, each flip a coin
    assert seed_power(21, 0.5) == pytest.approx(sum(math.comb(21, k) for k in range(16, 22)) / 2**21)
    assert seed_power(25, 0.62) < seed_power(25, 0.75) < 1


def test_all_seeds_exact_is_mcnemar_with_one_seed_and_by_hand_with_two():
    for gained, lost, same in [(6, 0, 3), (3, 1, 0), (1, 3, 5), (10, 10, 2), (0, 0, 4)]:
        base = {f"g{i}": False for i in range(gained)} | {f"l{i}": True for i in range(lost)}
        trained = {f"g{i}": True for i in range(gained)} | {f"l{i}": False for i in range(lost)}
        base |= {f"s{i}": i % 2 == 0 for i in range(same)}
        trained |= {f"s{i}": i % 2 == 0 for i in range(same)}
        assert all_seeds_exact(base, [trained])["p_value"] == pytest.approx(mcnemar_exact(gained, lost))
    # two seeds, one problem failed by the base and solved by both: the base is one of the 3 outcomes, drawn
    # among the 2 passes (S x gain -1, p 2/3) or as the fail (+2, p 1/3): P(|T| >= 2) = 1/3
    one = all_seeds_exact({"a": False}, [{"a": True}, {"a": True}])
    assert one["p_value"] == pytest.approx(1 / 3) and (one["gain_mean"], one["trained_mean"]) == (1.0, 1.0)
    # two such problems: sums -2 (4/9), 1 (4/9), 4 (1/9); observed 4
    assert all_seeds_exact({"a": False, "b": False}, [{"a": True, "b": True}] * 2)["p_value"] == pytest.approx(1 / 9)
    # seeds that disagree count half: +1 and -1 of one seed each cancel; unanimous problems add nothing
    half = all_seeds_exact({"a": False, "b": True, "c": True, "d": False},
                           [{"a": True, "b": True, "c": True, "d": False}, {"a": False, "b": False, "c": True, "d": False}])
    assert half["gain_mean"] == 0.0 and half["p_value"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same problems"):
        all_seeds_exact({"a": True}, [{"b": True}])


ONE_LINER = 'def f(x):\n    """Twice x."""\n    return 2 * x\n'


def _eval_dir(path, solved: dict[str, tuple[bool, bool]], invalid=0, recovered=0, retries=None, one_liners=0):
    """An evaluation's files as proctor eval writes them: id -> (first turn solved, rollout solved); the
    first ``one_liners`` problems' first attempts are one-line answers, the others have no code."""
    path.mkdir(parents=True)
    rows = [{"id": k, "solved": int(s), "rollouts": 1, "first_turn_solved": int(f),
             "episodes": [{"turns": [{"reply": f"reply to {k} in {path.parent.name}",
                                      "code": ONE_LINER if i < one_liners else None}]}]}
            for i, (k, (f, s)) in enumerate(solved.items())]
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "metrics.json").write_text(json.dumps({"model": "m", "dataset": "humaneval", "problems": len(rows),
                                                   "max_turns": 3, "invalid_turns": invalid,
                                                   "recovered_by_feedback": recovered,
                                                   **({"retries": retries} if retries else {})}))


def test_report_pairs_each_seed_with_the_base(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "report"
    ids = [f"p{i}" for i in range(20)]
    _eval_dir(runs / "base" / "eval", {k: (i < 5, i < 5) for i, k in enumerate(ids)}, invalid=7, one_liners=2)
    kinds = {"changed": 3, "resubmitted": 2, "no_function": 1, "no_code": 0}
    _eval_dir(runs / "seed0" / "eval", {k: (i < 11, i < 12) for i, k in enumerate(ids)}, recovered=1,  # +6 / +7
              retries=kinds, one_liners=9)
    _eval_dir(runs / "seed1" / "eval", {k: (0 < i < 5, 0 < i < 6) for i, k in enumerate(ids)})     # -1 / +0
    (runs / "seed0" / "metrics.jsonl").write_text(json.dumps({"iteration": 1, "reward_mean": -0.5}) + "\n")
    (runs / "seed0" / "wall.json").write_text(json.dumps({"train_s": 1800, "eval_s": 600}))
    for j in range(2):  # seed 1 is a soup of two runs: its wall and iterations are theirs together
        member = runs / "seed1" / f"member{j}"
        member.mkdir()
        (member / "metrics.jsonl").write_text(json.dumps({"iteration": 1, "iteration_s": 600.0 * (j + 1)}) + "\n")
        (member / "wall.json").write_text(json.dumps({"train_s": 900 * (j + 1), "eval_s": 5000}))  # its eval: not the seed's
    (runs / "seed1" / "wall.json").write_text(json.dumps({"train_s": 30, "eval_s": 570}))
    report = write_report(out, runs, [0, 1, 2])  # seed 2 has not finished: left out
    res = json.loads((out / "results.json").read_text())
    assert res["seeds"] == [0, 1]
    assert (res["base_pass1"], res["trained_pass1"], res["base_1at3"], res["trained_1at3"]) == (5, [11, 4], 5, [12, 5])
    assert res["p_value"] == pytest.approx([mcnemar_exact(6, 0), mcnemar_exact(0, 1)])
    assert res["gained"][0] == [f"p{i}" for i in range(5, 11)] and res["lost"][1] == ["p0"]
    assert res["wall_minutes"] == [40.0, 55.0] and res["iterations_minutes"] == [0.0, 30.0]
    assert res["runs_averaged"] == [1, 2]
    rows = [json.loads(x) for x in (out / "per_problem.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and rows[5] == {"seed": 0, "id": "p5", "base_pass1": False, "trained_pass1": True,
                                           "base_1at3": False, "trained_1at3": True}
    text = report.read_text()
    assert "| seed 0 | 11/20 | 0.0312 | 12/20 |" in text and "reply to p5 in seed0" in text
    assert res["trained_retries"] == [kinds, None] and res["base_retries"] is None
    assert res["base_one_return"] == 2 and res["trained_one_return"] == [9, 0]
    assert "| 1 | 0 | 3 / 2 / 1 / 0 | 9 | 40.0 min |" in text and "| 7 | - | 2 | | |" in text  # older: -
    both = all_seeds_exact({k: i < 5 for i, k in enumerate(ids)}, [{k: i < 11 for i, k in enumerate(ids)},
                                                                  {k: 0 < i < 5 for i, k in enumerate(ids)}])
    assert res["all_seeds"]["pass1"] == both and both["trained_mean"] == 7.5
    assert f"pass@1 5 -> 7.5 on average (p = {both['p_value']:.3g})" in text
    assert "the mean of 2 training runs' LoRA adapters (`run.soup=2`" in text
    assert (out / "training.png").stat().st_size > 0 and (out / "heldout.png").stat().st_size > 0


def test_one_return_is_a_function_whose_body_is_one_return():
    assert one_return(ONE_LINER) and one_return("import math\n\ndef g(x): return math.sqrt(x)\n")
    assert one_return("def helper(y):\n    y += 1\n    return y\n\ndef f(x):\n    return helper(x)\n")  # the last
    assert not one_return('def f(x):\n    """Twice."""\n    y = 2 * x\n    return y\n')
    assert not one_return('def f(x):\n    """Only a docstring."""\n') and not one_return("x = 1\n")
    assert not one_return("def f(:\n") and not one_return(None) and not one_return("")


def test_report_adds_rlef_sampling_when_evaluated(tmp_path):
    """With --rlef-sampling's evaluations (eval-t0.2) the report pairs them too; without, no section."""
    runs, out = tmp_path / "runs", tmp_path / "report"
    ids = [f"p{i}" for i in range(10)]
    for run, first, final in [("base", 3, 3), ("seed0", 3, 3)]:
        _eval_dir(runs / run / "eval", {k: (i < first, i < final) for i, k in enumerate(ids)})
    assert "RLEF's sampling protocol" not in write_report(out, runs, [0]).read_text()
    _eval_dir(runs / "base" / "eval-t0.2", {k: (i < 2, i < 3) for i, k in enumerate(ids)}, recovered=1)
    _eval_dir(runs / "seed0" / "eval-t0.2", {k: (i < 4, i < 7) for i, k in enumerate(ids)}, recovered=3)
    text = write_report(out, runs, [0]).read_text()
    res = json.loads((out / "results.json").read_text())
    assert res["rlef_sampled"] == [{"seed": 0, "base_pass1": 2, "trained_pass1": 4, "p_value": mcnemar_exact(2, 0),
                                    "base_1at3": 3, "trained_1at3": 7, "p_value_1at3": mcnemar_exact(4, 0),
                                    "recovered_by_feedback": 3}]
    assert "| 0 | 2 -> 4 | 0.5 | 3 -> 7 | 0.125 | 3 |" in text


def test_runs_record_their_command_and_refuse_another(tmp_path):
    """The recipe file and overrides land in --runs/command.json and the report; other ones are refused."""
    from argparse import Namespace

    from proctor.cluster.config import CONFIG_DIR, ConfigError
    from proctor.studies.learn import RECIPE, _record_command, trained_with

    runs, out = tmp_path / "runs", tmp_path / "report"
    assert trained_with(runs, [0]) is None
    _record_command(runs, Namespace(config=str(RECIPE), overrides=["rollout.samples_per_problem=8"]))
    _record_command(runs, Namespace(config=str(RECIPE), overrides=["rollout.samples_per_problem=8"]))  # the same: fine
    with pytest.raises(ConfigError, match=r"command\.json.*samples_per_problem=8.*not tiny with none"):
        _record_command(runs, Namespace(config=str(CONFIG_DIR / "tiny.yaml"), overrides=[]))
    assert trained_with(runs, [0, 1]) == f"proctor learn --runs {runs} --seeds 0,1 rollout.samples_per_problem=8"
    ids = [f"p{i}" for i in range(4)]
    for run in ("base", "seed0"):
        _eval_dir(runs / run / "eval", {k: (i < 2, i < 2) for i, k in enumerate(ids)})
    text = write_report(out, runs, [0]).read_text()
    assert f"Trained and evaluated with: `proctor learn --runs {runs} --seeds 0 rollout.samples_per_problem=8`" in text
    other = tmp_path / "other"
    _record_command(other, Namespace(config=str(CONFIG_DIR / "tiny.yaml"), overrides=[]))
    assert trained_with(other, [2]) == f"proctor learn --config tiny --runs {other} --seeds 2"
    # a record from before configs had names (a checkout's relative path) is the same recipe
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "command.json").write_text('{"config": "configs/learn-cpu.yaml", "overrides": []}\n')
    _record_command(legacy, Namespace(config="learn-cpu", overrides=[]))
    assert trained_with(legacy, [0]) == f"proctor learn --runs {legacy} --seeds 0"


def test_report_without_a_base_evaluation_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="base evaluation has not finished"):
        write_report(tmp_path / "r", tmp_path / "runs", [0])


def _sample(pid, reward):
    return Sample(token_ids=[1, 2, 3], action_mask=[0, 1, 1], logprobs=[0.0, -1.0, -1.0], turn_ends=[2],
                  turn_spans=[(1, 3)], turn_rewards=[reward], id=pid)


def test_informative_leaves_out_groups_whose_returns_are_all_equal():
    samples = [_sample("a", 1.0), _sample("a", 1.0), _sample("b", -1.0), _sample("b", 1.0), _sample("c", -1.2)]
    assert [(s.id, s.turn_rewards[0]) for s in informative(samples)] == [("b", -1.0), ("b", 1.0)]


def test_report_only_without_results_is_one_error_line(tmp_path, capsys):
    from proctor.cluster.cli import main

    assert main(["learn", "--report-only", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "r")]) == 2
    assert "error: " in capsys.readouterr().out


@pytest.mark.slow
def test_learn_end_to_end_on_the_tiny_model_and_a_rerun_skips_what_is_done(tiny_model_dir, tmp_path):
    """Base eval, one seed trained and evaluated, the report; a second call finds every stage done."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    runs, out = tmp_path / "runs", tmp_path / "report"
    cmd = [sys.executable, "-m", "proctor.cluster.cli", "learn", "--config", str(root / "configs" / "tiny.yaml"),
           "--seeds", "0", "--eval-limit", "3", "--runs", str(runs), "--out", str(out),
           f"model.name={tiny_model_dir}", "data.skip=2", "run.iterations=1", "run.save_policy=true"]
    first = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["problems"] == 3 and res["seeds"] == [0] and len(res["p_value"]) == 1
    assert res["train_slice"][0]["problems"] == 2
    kinds = ["changed", "resubmitted", "no_function", "no_code"]
    assert list(res["base_retries"]) == list(res["trained_retries"][0]) == kinds  # the real evaluation sorts retries
    assert res["trained_with"].endswith(f"--config tiny --runs {runs} --seeds 0 {' '.join(cmd[-4:])}")
    assert (runs / "seed0" / "policy" / "config.json").exists() and not (runs / "seed0" / "checkpoint").exists()
    wall = json.loads((runs / "seed0" / "wall.json").read_text())
    # a rerun with RLEF's sampling adds only the sampled evaluations, timed apart from the recipe's wall
    again = subprocess.run([*cmd, "--rlef-sampling"], cwd=root, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "training" not in again.stdout, again.stdout[-2000:]
    after = json.loads((runs / "seed0" / "wall.json").read_text())
    assert after["train_s"] == wall["train_s"] and after["eval_s"] == pytest.approx(wall["eval_s"], abs=1.0)
    assert after["eval_sampled_s"] > 0 and (runs / "seed0" / "eval-t0.2" / "metrics.json").exists()
    assert len(json.loads((out / "results.json").read_text())["rlef_sampled"]) == 1


@pytest.mark.slow
def test_learn_soup_trains_each_run_then_evaluates_their_average(tiny_model_dir, tmp_path):
    """run.soup=2: the seed's two LoRA runs train (run.seed 2 and 3 for seed 1), their adapters are
    averaged into the seed's policy, and only that policy is evaluated."""
    import subprocess
    import sys
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    root = Path(__file__).resolve().parent.parent
    runs, out = tmp_path / "runs", tmp_path / "report"
    cmd = [sys.executable, "-m", "proctor.cluster.cli", "learn", "--config", str(root / "configs" / "tiny.yaml"),
           "--seeds", "1", "--eval-limit", "2", "--runs", str(runs), "--out", str(out), f"model.name={tiny_model_dir}",
           "data.skip=0", "run.iterations=1", "run.save_policy=true", "learner.lora_rank=4", "learner.lr=1e-2",
           "learner.dtype=float32", "run.soup=2"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seed = runs / "seed1"
    assert [yaml_seed(seed / f"member{j}") for j in range(2)] == [2, 3]
    assert (seed / "eval" / "metrics.json").exists() and not (seed / "member0" / "eval").exists()  # only the soup
    members = [load_file(str(seed / f"member{j}" / "policy" / "model.safetensors")) for j in range(2)]
    soup = load_file(str(seed / "policy" / "model.safetensors"))
    name = next(n for n in soup if "q_proj" in n)
    assert not torch.equal(members[0][name], members[1][name])  # two runs, two draws
    mean = (members[0][name].float() + members[1][name].float()) / 2
    assert torch.allclose(soup[name].float(), mean, atol=1e-6)  # fp32: the mean of the two runs' merged networks
    res = json.loads((out / "results.json").read_text())
    assert res["seeds"] == [1] and res["runs_averaged"] == [2] and res["problems"] == 2


def yaml_seed(run_dir) -> int:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())["run"]["seed"]
