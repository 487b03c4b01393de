"""``proctor bench iteration [--problems N] [--samples S] [--max-tokens M]``: one RL iteration,
proctor vs TRL's GRPOTrainer, same model, prompts, rollouts, tokens, reward and machine.

Both sides do single-turn work: N problems x S samples, up to M new tokens, temperature 1, the
reward is RLEF's outcome (the sandbox judges the reply's code on all tests: +1 / -1, -0.2 more
without valid code). Timed: one iteration (rollout + reward + update (+ proctor's weight push)),
after each side's start-up, which is reported apart. Last line: one JSON object.

proctor runs twice: with ``learner.advantage=grpo`` (critic-free, group-normalised returns, k3 KL
loss: the same algorithm as TRL's side, so ``ratio_proctor_vs_trl`` compares like with like) and
with its default PPO + critic (``ratio_ppo_vs_trl``). What still differs, printed with the result:
proctor generates with vLLM (engine actor) and pushes the new weights to it; TRL generates with
transformers' ``generate`` in the training process (its vLLM path supports vLLM <= 0.31 and needs
a GPU server or colocation). Both compute reference logprobs (KL beta 0.05).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from proctor.cluster.progress import make_console

DIFFERENCES = ("proctor: vLLM engine actor for generation, a weight push to it after the update, DeepSpeed "
               "learner in a Ray actor; GRPO run = group-normalised returns + k3 KL loss (beta 0.05), PPO run = "
               "actor + critic (critic forwards/backward, GAE). TRL: transformers generate in the training process, "
               "GRPO with beta 0.05 (its default loss normalisation). Same model, prompts, samples, max tokens, "
               "temperature, reward, 2 CPU cores.")


def _reward(problems: dict, sandbox, cfg):
    from proctor.sandbox_pool.code import extract_code
    from proctor.sandbox_pool.judge import judge

    def reward(prompts, completions, problem_id, **_) -> list[float]:
        out = []
        for comp, pid in zip(completions, problem_id):
            text = comp[-1]["content"] if isinstance(comp, list) else comp
            code = extract_code(text, problems[pid].entry_point)
            if code is None:
                out.append(cfg.reward.invalid_turn + cfg.reward.failure)
                continue
            ok = judge(sandbox, problems[pid], code, "all").passed
            out.append(cfg.reward.success if ok else cfg.reward.failure)
        return out

    return reward


def run_trl(model_dir: str, problems: list, samples: int, max_tokens: int, cfg, console, dtype: str) -> dict:
    """TRL's GRPOTrainer for one step; ``dtype`` bfloat16 = its ``bf16=True`` (fp32 weights, bf16
    autocast: mixed precision as TRL and the HF Trainer do it)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from proctor.rollout.prompts import first_turn
    from proctor.sandbox_pool.runner import Sandbox

    torch.set_num_threads(2)
    rows = [{"prompt": [{"role": "user", "content": first_turn(p)}], "problem_id": p.id} for p in problems]
    with Sandbox(cfg.sandbox.backend, cfg.sandbox.slots) as sandbox, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        args = GRPOConfig(output_dir=tmp, use_cpu=True, per_device_train_batch_size=len(problems) * samples,
                          num_generations=samples, max_completion_length=max_tokens, max_steps=1, temperature=1.0,
                          beta=0.05, learning_rate=cfg.learner.lr, report_to=[], logging_steps=1, save_strategy="no",
                          seed=cfg.run.seed, bf16=dtype == "bfloat16", dataloader_num_workers=0)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        trainer = GRPOTrainer(model=model, processing_class=AutoTokenizer.from_pretrained(model_dir), reward_funcs=_reward({p.id: p for p in problems}, sandbox, cfg),
                              args=args, train_dataset=Dataset.from_list(rows))
        start_s = time.perf_counter() - t0
        spent = _time_methods(trainer, ["_generate", "_generate_and_score_completions"])
        console.print(f"TRL GRPO ({dtype}): start-up {start_s:.1f} s; one step of {len(rows) * samples} completions")
        t0 = time.perf_counter()
        trainer.train()
        step_s = time.perf_counter() - t0
    logs = [h for h in trainer.state.log_history if "reward" in h]
    gen, scored = spent["_generate"], spent["_generate_and_score_completions"]
    return {"dtype": dtype, "startup_s": round(start_s, 1), "iteration_s": round(step_s, 1), "generate_s": round(gen, 1),
            "reward_and_reference_s": round(scored - gen, 1), "update_s": round(step_s - scored, 1),
            "reward_mean": logs[-1]["reward"] if logs else None,
            "completion_tokens_mean": logs[-1].get("completions/mean_length") if logs else None}


def _time_methods(obj, names: list[str]) -> dict[str, float]:
    """Wrap ``obj``'s methods so the seconds spent in each accumulate in the returned dict."""
    spent = dict.fromkeys(names, 0.0)
    for name in names:
        fn = getattr(obj, name)

        def timed(*args, _fn=fn, _name=name, **kwargs):
            t = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - t

        setattr(obj, name, timed)
    return spent


def run_proctor(problems_n: int, samples: int, max_tokens: int, overrides: list[str], console,
                advantage: str) -> dict:
    from proctor.cluster.config import load_config
    from proctor.cluster.metrics import read_metrics
    from proctor.cluster.train import train

    cfg = load_config(overrides=[*overrides, "run.iterations=1", "rollout.max_turns=1", "run.eval_problems=0",
                                 f"run.problems_per_iteration={problems_n}", f"rollout.samples_per_problem={samples}",
                                 f"rollout.max_new_tokens={max_tokens}", "learner.ppo_epochs=1",
                                 f"learner.minibatch_size={problems_n * samples}", f"learner.advantage={advantage}"])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(cfg, Path(tmp), console=console)
        total = time.perf_counter() - t0
        [row] = read_metrics(Path(tmp))
    from proctor.learner.model import resolve_dtype

    return {"learner_dtype": resolve_dtype(cfg.learner.dtype, "cpu"), "rollout_dtype": resolve_dtype(cfg.rollout.dtype, "cpu"),
            "rollout_compile": cfg.rollout.compile,
            "startup_s": round(total - row["iteration_s"], 1), "iteration_s": round(row["iteration_s"], 1),
            "rollout_s": round(row["rollout_s"], 1), "learn_s": round(row["learn_s"], 1),
            "push_s": round(row["push_s"], 2), "reward_mean": row["reward_mean"],
            "completion_tokens_mean": row["reply_tokens_mean"]}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="proctor bench iteration")
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--trl-dtypes", default="float32,bfloat16",
                    help="TRL runs, one per dtype (bfloat16: bf16=True); proctor is compared with the fastest")
    ap.add_argument("overrides", nargs="*", help="key=value for proctor's side (configs/local.yaml)")
    args = ap.parse_args(argv)
    console = make_console(stderr=True)
    try:
        import trl  # noqa: F401
    except ImportError:
        console.print("[bold red]error:[/] this benchmark needs TRL: pip install -e '.[bench]'")
        return 2
    from proctor.cluster.config import load_config
    from proctor.cluster.model import resolve
    from proctor.problems import load_problems
    from proctor.problems.format import Problem

    cfg = load_config(overrides=args.overrides)
    model_dir = str(resolve(cfg.model.name, log=console.print))
    # proctor draws its iteration's problems with the run seed: TRL gets exactly the same ones.
    from proctor.cluster.train import iteration_problems

    all_problems = load_problems(cfg.data.train)
    pcfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"problems_per_iteration": args.problems})})
    problems: list[Problem] = iteration_problems(all_problems, pcfg, 0)
    console.print(f"[bold]bench iteration[/]: {args.problems} problems x {args.samples} samples, "
                  f"{args.max_tokens} new tokens, single turn")
    grpo = run_proctor(args.problems, args.samples, args.max_tokens, args.overrides, console, "grpo")
    ppo = run_proctor(args.problems, args.samples, args.max_tokens, args.overrides, console, "gae")
    trl_runs = [run_trl(model_dir, problems, args.samples, args.max_tokens, cfg, console, dt)
                for dt in args.trl_dtypes.split(",")]
    theirs = min(trl_runs, key=lambda r: r["iteration_s"])
    result = {"bench": "iteration", "model": cfg.model.name, "problems": args.problems, "samples": args.samples,
              "max_tokens": args.max_tokens, "proctor_grpo": grpo, "proctor_ppo": ppo, "trl_grpo": theirs,
              "trl_runs": trl_runs,
              "ratio_proctor_vs_trl": round(grpo["iteration_s"] / theirs["iteration_s"], 3),
              "ratio_ppo_vs_trl": round(ppo["iteration_s"] / theirs["iteration_s"], 3),
              "differences": DIFFERENCES}
    console.print(f"one iteration: proctor GRPO {grpo['iteration_s']} s, proctor PPO {ppo['iteration_s']} s "
                  f"(learner {grpo['learner_dtype']}, engine {grpo['rollout_dtype']}), TRL GRPO ({theirs['dtype']}) "
                  f"{theirs['iteration_s']} s (ratios {result['ratio_proctor_vs_trl']}, {result['ratio_ppo_vs_trl']}); "
                  f"{DIFFERENCES}")
    print(json.dumps(result))
    return 0
