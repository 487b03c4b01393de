"""``proctor train`` end to end on the tiny model: rollouts on a vLLM engine actor, the sandbox pool,
PPO on a DeepSpeed learner, weight pushes, metrics (JSONL, TensorBoard, PNG), checkpoint, resume."""

import json
from pathlib import Path

import pytest

from proctor.cluster.config import load_config
from proctor.cluster.metrics import read_metrics
from proctor.cluster.plot import plot

ROOT = Path(__file__).resolve().parent.parent



@pytest.mark.slow
def test_train_tiny_runs_logs_checkpoints_and_resumes(ray_local, tiny_model_dir, tmp_path):
    from proctor.cluster.train import train

    run = tmp_path / "run"
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"model.name={tiny_model_dir}", "run.iterations=2",
                                                        "run.eval_problems=3"])
    summary = train(cfg, run)
    rows = read_metrics(run)
    assert [r["iteration"] for r in rows] == [1, 2] and summary["iterations"] == 2
    for r in rows:
        assert r["episodes"] == 2 * 2 and r["dropped_infra_error"] == 0
        assert r["reward_mean"] <= -1.0  # a random model fails the private tests (and may add invalid turns)
        assert r["learner/steps"] >= 1 and r["rollout_tokens_per_s"] > 0 and r["push_s"] > 0
    assert rows[1]["learner/steps"] > rows[0]["learner/steps"]
    assert "eval/1@2" not in rows[0] and rows[1]["eval/problems"] == 3 and rows[1]["eval/1@2"] == 0.0
    assert summary["eval/1@2"] == 0.0
    assert list((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert json.loads((run / "checkpoint" / "driver.json").read_text())["iterations_done"] == 2
    png = (run / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    cfg3 = load_config(run / "config.yaml", ["run.iterations=3"])
    train(cfg3, run, resume=True)
    rows = read_metrics(run)
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert rows[2]["learner/steps"] > rows[1]["learner/steps"]
    # the run explains itself: the console, timestamped, both runs in one log; the learner's progress shown
    log = (run / "console.log").read_text()
    assert log.count("proctor train: ") == 2 and "resumed from" in log
    assert "iteration 3: learner minibatches: 1/1 (100%)" in log and "iteration 3: reward" in log


def test_plot_names_the_missing_or_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metrics\.jsonl"):
        plot(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1, "reward_mean": -1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        plot(tmp_path)


def _ignore_sigint():
    """How ``cmd &`` in a non-interactive shell starts a process: SIGINT ignored (inherited)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


# (signal, the output line after which it is sent, exit code, iterations saved, message)
INTERRUPTS = {
    "sigint-between-iterations": ("SIGINT", "iteration 1: reward", 130, 1, "interrupted: saved after iteration 1"),
    "sigterm-during-update": ("SIGTERM", "iteration 2: learner on", 143, 1,
                              "interrupted during a learner update: not saved; the last checkpoint stands"),
    "sigterm-during-rollout": ("SIGTERM", "iteration 2: rollout", 143, 1, "interrupted: saved after iteration 1"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(INTERRUPTS))
def test_interrupt_saves_finished_iterations_and_leaves_no_process(tiny_model_dir, tmp_path, case):
    """SIGINT / SIGTERM at several points of a run started with SIGINT ignored (as ``&`` does): the
    finished iterations are saved (or the last checkpoint kept when an update was cut), the exit code
    is 130 / 143, and no process the run started is left."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    sig, after, code, saved, message = INTERRUPTS[case]
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "proctor.cluster.cli", "train", "--config", str(ROOT / "configs" / "tiny.yaml"),
           "--run-dir", str(run), f"model.name={tiny_model_dir}", "run.iterations=3", "run.checkpoint_every=1",
           "rollout.max_new_tokens=256"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ignore_sigint)
    seen, family = [], []
    deadline = time.time() + 600
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(after):
            family = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(getattr(signal, sig))
            break
        assert time.time() < deadline, "".join(seen[-20:])
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == code, "".join(seen[-20:]) + out[-3000:]
    assert message in out
    assert json.loads((run / "checkpoint" / "driver.json").read_text())["iterations_done"] == saved
    assert [r["iteration"] for r in read_metrics(run)] == list(range(1, saved + 1))
    assert family, "the run had started no process (Ray, engine) by then"
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, [(p.pid, p.cmdline()[:3]) for p in alive]


def _actor_weights(run):
    """The learner's actor weights from a run's last checkpoint (DeepSpeed model-states file)."""
    import torch

    tag = (run / "checkpoint" / "actor" / "latest").read_text().strip()
    state = torch.load(run / "checkpoint" / "actor" / tag / "mp_rank_00_model_states.pt", weights_only=False)
    return state["module"]


@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_one(ray_local, tiny_model_dir, tmp_path):
    """2 iterations straight vs 1 iteration + --resume for the 2nd: same episodes, same weights.
    Greedy rollouts, so the comparison does not hinge on sampling noise; old logprobs recomputed
    by the learner, because the engine's behaviour logprobs of the same greedy tokens vary in the
    last float bits with how concurrent requests happened to share a batch (seen in CI: 1e-8)."""
    import torch

    from proctor.cluster.train import train

    base = [f"model.name={tiny_model_dir}", "rollout.temperature=0", "learner.lr=1e-3", "learner.old_logprobs=recompute"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(load_config(ROOT / "configs" / "tiny.yaml", [*base, "run.iterations=2", "run.save_policy=true"]), straight)
    train(load_config(ROOT / "configs" / "tiny.yaml", [*base, "run.iterations=1"]), split)
    train(load_config(split / "config.yaml", ["run.iterations=2"]), split, resume=True)
    a, b = read_metrics(straight), read_metrics(split)
    keys = ["reward_mean", "reply_tokens_mean", "turns_mean", "retry_resubmitted_frac", "learner/policy_loss", "learner/value_loss",
            "learner/kl_ref", "learner/steps"]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    wa, wb = _actor_weights(straight), _actor_weights(split)
    assert set(wa) == set(wb)
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    init = hf_state(tiny_model_dir)
    changed = any(not torch.equal(wa[n], init[n]) for n in wa if n in init)
    assert changed, "training did not change the weights: the comparison would prove nothing"

    # run.save_policy: the final actor as a HF dir, the checkpoint's weights exactly, loadable as is.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = hf_state(straight / "policy")
    assert set(wa) - set(policy) <= {"lm_head.weight"}  # tied to the embeddings: stored once
    for name in policy:
        assert torch.equal(policy[name], wa[name]), name
    model = AutoModelForCausalLM.from_pretrained(straight / "policy")
    assert torch.equal(model.get_output_embeddings().weight, wa["lm_head.weight"])
    assert AutoTokenizer.from_pretrained(straight / "policy").get_vocab() == AutoTokenizer.from_pretrained(
        tiny_model_dir).get_vocab()
    assert not (split / "policy").exists()  # off by default


def hf_state(model_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


@pytest.mark.slow
def test_one_step_off_rollouts_run_one_version_behind_single_turn_first(ray_local, tiny_model_dir, tmp_path):
    from proctor.cluster.train import train

    run = tmp_path / "async"
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"model.name={tiny_model_dir}", "run.iterations=3",
                                                        "run.async_rollout=true", "run.eval_problems=2",
                                                        "rollout.single_turn_iterations=2"])
    train(cfg, run)
    rows = read_metrics(run)
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    # one attempt in the first two iterations (the one rolled out ahead too), then tiny.yaml's two; the
    # untrained model never passes the public tests, so every episode uses all its attempts
    assert [r["max_turns"] for r in rows] == [1, 1, 2] and [r["turns_mean"] for r in rows] == [1.0, 1.0, 2.0]
    assert {int(k): n for k, n in rows[2]["eval/turns_used"].items()} == {2: 2}  # evaluation keeps max_turns
    # iteration 1 rolls out on the initial weights; each later one on the weights before the last update
    assert [r["policy_lag"] for r in rows] == [0.0, 1.0, 1.0]
    assert all(r["learner/steps"] >= 1 for r in rows) and rows[2]["eval/problems"] == 2


@pytest.mark.slow
def test_lora_run_pushes_only_the_adapter_to_engines_that_serve_it(ray_local, tiny_model_dir, tmp_path):
    """learner.lora_rank + rollout.max_lora_rank: every push (the first one included) is the learner's
    peft adapter, which the engine loads through vLLM's LoRARequest and samples from."""
    from proctor.cluster.train import train

    run = tmp_path / "lora"
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"model.name={tiny_model_dir}", "run.iterations=2",
                                                        "learner.lora_rank=8", "rollout.max_lora_rank=8",
                                                        "learner.lr=1e-3", "run.eval_problems=2"])
    train(cfg, run)
    rows = read_metrics(run)
    assert [r["iteration"] for r in rows] == [1, 2] and [r["policy_lag"] for r in rows] == [0.0, 0.0]
    assert all(r["push_s"] > 0 and r["learner/steps"] >= 1 for r in rows)
    assert 0 < rows[0]["learner/trainable_params"] < 10**6  # the adapters of a 25M-parameter model
    assert rows[1]["eval/problems"] == 2


def test_metrics_log_truncates_to_the_checkpoint(tmp_path):
    """A driver killed between logging iteration N and checkpointing it resumes after N - 1: row N
    goes, so the rerun of N is not logged twice."""
    from proctor.cluster.metrics import MetricsLog

    log = MetricsLog(tmp_path)
    for i in (1, 2, 3):
        log.write({"iteration": i, "reward_mean": float(i)})
    assert log.truncate(2) == 1
    log.write({"iteration": 3, "reward_mean": 9.0})
    log.close()
    assert [(r["iteration"], r["reward_mean"]) for r in read_metrics(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 9.0)]


def test_metrics_log_writes_a_wandb_run_offline(tmp_path, monkeypatch):
    """run.wandb: the same scalars go to a W&B run; offline (no network) it is written under the run
    dir, and a second log in the same dir (a resumed run) reuses the run id."""
    from proctor.cluster.metrics import MetricsLog

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = MetricsLog(tmp_path, wandb={"project": "proctor-test", "config": {"run": {"seed": 3}}})
    log.write({"iteration": 1, "reward_mean": -0.8125, "note": "text is not a scalar"})
    log.write({"iteration": 2, "reward_mean": 0.4375})
    log.close()
    run_id = (tmp_path / "wandb_id.txt").read_text()
    [record] = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    data = record.read_bytes()   # protobuf records: keys and JSON values appear as text
    assert b"reward_mean" in data and b"-0.8125" in data and b"0.4375" in data and b"proctor-test" in data
    MetricsLog(tmp_path, wandb={"project": "proctor-test"}).close()
    assert (tmp_path / "wandb_id.txt").read_text() == run_id


@pytest.mark.slow
@pytest.mark.parametrize("max_restarts", [1, 0])
def test_a_learner_worker_killed_mid_update(ray_local, tiny_model_dir, tmp_path, monkeypatch, max_restarts):
    """Iteration 2's update loses its worker (killed through Ray). With a restart left, the learner is
    rebuilt from the checkpoint after iteration 1 and the run ends complete; without, the run stops
    with a message naming the resume command, the checkpoint of iteration 1 intact."""
    from proctor.cluster.train import LearnerLost, train
    from proctor.learner.group import LearnerGroup

    real, calls = LearnerGroup.train, []

    def train_then_lose_a_worker(self, samples, **kwargs):
        calls.append(len(samples))
        if len(calls) == 2:
            ray_local.kill(self.workers[0])
        return real(self, samples, **kwargs)

    monkeypatch.setattr(LearnerGroup, "train", train_then_lose_a_worker)
    run = tmp_path / "run"
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"model.name={tiny_model_dir}", "run.iterations=3",
                                                        f"run.max_restarts={max_restarts}"])
    if max_restarts == 0:
        with pytest.raises(LearnerLost, match=r"died during iteration 2 .*proctor train --resume"):
            train(cfg, run)
        assert json.loads((run / "checkpoint" / "driver.json").read_text())["iterations_done"] == 1
        assert [r["iteration"] for r in read_metrics(run)] == [1]
        return
    train(cfg, run)
    rows = read_metrics(run)
    assert [r["iteration"] for r in rows] == [1, 2, 3] and len(calls) == 4  # iteration 2 ran twice
    assert [r["learner_restarts"] for r in rows] == [0, 1, 1]
    assert json.loads((run / "checkpoint" / "driver.json").read_text())["iterations_done"] == 3


@pytest.mark.slow
def test_driver_killed_with_sigkill_resumes_without_losing_a_finished_iteration(tiny_model_dir, tmp_path):
    """No handler runs on SIGKILL: the checkpoint written after each iteration is all there is.
    ``--resume`` goes on from it, and the metrics hold each iteration once."""
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    base = [sys.executable, "-m", "proctor.cluster.cli", "train"]
    cmd = [*base, "--config", str(ROOT / "configs" / "tiny.yaml"), "--out", str(run),
           f"model.name={tiny_model_dir}", "run.iterations=3", "run.checkpoint_every=1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("iteration 2: reward"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.communicate(timeout=120)
    done = json.loads((run / "checkpoint" / "driver.json").read_text())["iterations_done"]
    assert done in (1, 2)  # killed right after logging iteration 2: its checkpoint may not be written yet
    resumed = subprocess.run([*base, "--resume", str(run)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert f"resumed from {run / 'checkpoint'} after iteration {done}" in resumed.stdout
    assert [r["iteration"] for r in read_metrics(run)] == [1, 2, 3]


@pytest.mark.parametrize("seed", [0, 3])
def test_epoch_draw_covers_every_problem_once_per_pass(seed):
    from proctor.cluster.train import iteration_problems
    problems = list(range(10))
    cfg = load_config(None, [f"run.seed={seed}", "run.problems_per_iteration=4", "run.draw=epoch"])
    draws = [iteration_problems(problems, cfg, it) for it in range(5)]  # 20 positions: two whole passes
    flat = [p for d in draws for p in d]
    assert all(len(d) == 4 for d in draws)
    assert sorted(flat[:10]) == problems and sorted(flat[10:]) == problems
    assert flat[:10] != problems  # shuffled, not in file order
    assert draws == [iteration_problems(problems, cfg, it) for it in range(5)]  # a resumed run draws the same
    other = load_config(None, [f"run.seed={seed + 1}", "run.problems_per_iteration=4", "run.draw=epoch"])
    assert [iteration_problems(problems, other, it) for it in range(5)] != draws


def test_sample_draw_is_a_fresh_draw_per_iteration():
    from proctor.cluster.train import iteration_problems
    problems = list(range(10))
    cfg = load_config(None, ["run.problems_per_iteration=4"])
    assert cfg.run.draw == "sample"
    draws = [iteration_problems(problems, cfg, it) for it in range(5)]
    assert all(len(set(d)) == 4 for d in draws)
    flat = [p for d in draws for p in d]
    assert sorted(flat[:10]) != problems  # draws overlap: the first 10 positions are not one pass
