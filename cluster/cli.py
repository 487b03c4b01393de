"""proctor: reinforcement learning for code LLMs from execution feedback (RLEF) and line-level process
rewards (PSGPO), on Ray. ``proctor COMMAND --help`` for each command; the docs site for the rest.

Every command that takes a config accepts ``key=value`` overrides (``rollout.max_turns=2``); ``--config``
takes a YAML file or a shipped config's name (``proctor config show --config tiny``).
"""

from __future__ import annotations

import argparse
import collections
import json
import pkgutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

import proctor.cluster.ray_local  # noqa: F401  (sets the bind-to-loopback variables before anything imports ray)
from proctor.cluster import signals
from proctor.cluster.config import ConfigError, dump_config, load_config
from proctor.cluster.judge_cli import cmd_sandbox_judge, cmd_sandbox_serve
from proctor.cluster.model import EMBEDDED, ModelError, resolve
from proctor.cluster.progress import make_console
from proctor.problems import DataError, load_problems
from proctor.problems.fetch import FetchError
from proctor.sandbox_pool.bwrap import SandboxUnavailable

console = make_console()


def cmd_data_inspect(args) -> int:
    problems = load_problems(args.source)
    kinds = collections.Counter(p.kind for p in problems)
    console.print(f"[bold]{args.source}[/]: {len(problems)} problems")
    for kind, n in sorted(kinds.items()):
        console.print(f"  {kind}: {n}")
    console.print(f"  tests: {sum(len(p.public_tests) for p in problems)} public, "
                  f"{sum(len(p.private_tests) for p in problems)} private")
    if problems:
        console.print("example:")
        console.print_json(json.dumps(problems[0].model_dump()))
    return 0


def cmd_model_prepare(args) -> int:
    t0 = time.perf_counter()
    path = resolve(args.model, log=console.print)
    console.print(f"{args.model} -> {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_model_soup(args) -> int:
    from proctor.learner.soup import soup

    try:
        out = soup(args.adapters, resolve(args.base, log=console.print), args.out, args.dtype)
    except (FileNotFoundError, ValueError) as e:
        raise ModelError(str(e)) from e
    console.print(f"{len(args.adapters)} adapters averaged on {args.base} -> {out}")
    return 0


def cmd_model_generate(args) -> int:
    """Greedy chat generation with transformers (a quick look at a model, no engine)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(args.model, log=console.print)
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = tok.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    t0 = time.perf_counter()
    out = model.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=False)
    new = out[0, ids["input_ids"].shape[1]:]
    dt = time.perf_counter() - t0
    console.print(tok.decode(new, skip_special_tokens=True), markup=False, highlight=False)
    console.print(f"[dim]{len(new)} tokens in {dt:.1f} s ({len(new) / dt:.1f} tok/s)[/]")
    return 0


def cmd_eval(args) -> int:
    from proctor.cluster.eval import EvalSet, evaluate

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model.name={args.model}")
    cfg = load_config(args.config, overrides)
    dataset = args.dataset or cfg.data.eval
    turns = args.turns or cfg.rollout.max_turns
    out = Path(args.out or Path(cfg.run.out_dir) / f"eval-{Path(dataset).stem.replace(':', '_')}-{turns}turn")
    sets = [EvalSet(dataset, out, args.limit, args.skip)]
    for name, limit, also_out in args.also or []:
        if not limit.isdigit():
            console.print(f"[bold red]error:[/] --also {name} {limit} {also_out}: LIMIT must be a count (0 = all)")
            return 2
        sets.append(EvalSet(name, Path(also_out), int(limit) or None))
    evaluate(cfg, sets, turns=turns, samples=args.samples, temperature=args.temperature, top_p=args.top_p,
             adapter=Path(args.adapter) if args.adapter else None, console=console)
    return 0


def cmd_train(args) -> int:
    from proctor.cluster.placement import PlacementError
    from proctor.cluster.ray_local import ClusterUnreachable, job_path
    from proctor.cluster.train import RunLost, train
    from proctor.learner.storage import StorageError

    if args.resume:
        run_dir = job_path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.exists():
            console.print(f"[bold red]error:[/] {saved} not found: --resume needs a run dir written by proctor train")
            return 2
        cfg = load_config(saved, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
        run_dir = job_path(args.run_dir or cfg.run.out_dir)
    try:
        train(cfg, run_dir, resume=bool(args.resume), console=console)
    except RunLost as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        return 1
    except (StorageError, ClusterUnreachable, PlacementError) as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2
    return 0


def _redraw(write) -> int:
    """Redraw a report from finished results; missing or bad inputs are one error line (exit 2)."""
    try:
        console.print(f"wrote {write()}")
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2
    return 0


def cmd_learn(args) -> int:
    from proctor.studies import learn

    if args.pool:
        from proctor.studies.pooled import write_pooled

        return _redraw(lambda: write_pooled(Path(args.pool)))
    if args.report_only:
        return _redraw(lambda: learn.write_report(Path(args.out), Path(args.runs), args.seeds))
    return learn.run_learn(args, console)


def cmd_study(args) -> int:
    from proctor.studies import study, study_seeds

    if args.action == "report":
        return _redraw(lambda: study.write_report(Path(args.out), Path(args.runs)))
    if args.action == "seeds":
        return _redraw(lambda: study_seeds.write_seeds_report(Path(args.out), [Path(r) for r in args.runs.split(",") if r]))
    problem = study.check(args)
    if problem:
        console.print(f"[bold red]error:[/] {problem}", highlight=False)
        return 2
    if args.action == "start":
        pid, log = study.start_background(args)
        console.print(f"study running in the background (pid {pid}); follow {log}; "
                      f"the report grows in {args.out}/report.md as arms finish")
        return 0
    return study.run_study(args, console)


def cmd_plot(args) -> int:
    from proctor.cluster.plot import plot

    return _redraw(lambda: plot(Path(args.run_dir), Path(args.out) if args.out else None))


def cmd_bench(args) -> int:
    """``proctor bench NAME [ARGS]``: runs ``proctor.bench.NAME``'s ``main(argv)``."""
    import importlib

    import proctor.bench

    # proctor/bench/weight_sync.py is ``proctor bench weight-sync``
    names = sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(proctor.bench.__path__)
                   if not m.name.startswith("_"))
    if args.name not in names:
        console.print(f"[bold red]error:[/] unknown benchmark {args.name!r}; available: {', '.join(names)}")
        return 2
    return importlib.import_module(f"proctor.bench.{args.name.replace('-', '_')}").main(args.args) or 0


def cmd_prm_label(args) -> int:
    from proctor.cluster.prm import label

    label(load_config(args.config, args.overrides), console)
    return 0


def cmd_prm_train(args) -> int:
    from proctor.cluster.prm import train
    from proctor.reward.train import LabelError

    try:
        train(load_config(args.config, args.overrides), console)
    except LabelError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2
    return 0


def cmd_config_show(args) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.explain:
        from proctor.cluster.config_docs import explain

        console.print(explain(cfg), markup=False, highlight=False, end="")
        return 0
    console.print(dump_config(cfg), markup=False, highlight=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="proctor", usage="proctor [--version] COMMAND ...", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"proctor {version('proctor')}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS, prog="proctor")

    data = sub.add_parser("data", help="inspect a problem source: counts per kind, one example").add_subparsers(dest="action", required=True)
    p = data.add_parser("inspect", help="counts per kind and one example")
    p.add_argument("source", help="bundled, humaneval, a .jsonl/.parquet file, or ADAPTER:SOURCE")
    p.set_defaults(fn=cmd_data_inspect)

    model = sub.add_parser("model", help="prepare a model, generate with it, average LoRA adapters").add_subparsers(dest="action", required=True)
    p = model.add_parser("prepare", help="turn a model (default: the embedded one) into a local HF dir")
    p.add_argument("model", nargs="?", default=EMBEDDED)
    p.set_defaults(fn=cmd_model_prepare)
    p = model.add_parser("generate", help="greedy reply of a model to one prompt")
    p.add_argument("prompt")
    p.add_argument("--model", default=EMBEDDED)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(fn=cmd_model_generate)
    p = model.add_parser("soup", help="average LoRA adapters (runs' policy/adapter) into one HF model dir")
    p.add_argument("adapters", nargs="+", help="peft LoRA adapter dirs, all trained on --base")
    p.add_argument("--base", default=EMBEDDED, help="the model they were trained on (name or HF dir)")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.set_defaults(fn=cmd_model_soup)

    def with_config(p):
        p.add_argument("--config", help="a YAML file, or a shipped config by name (local, tiny, learn-cpu, gpu-8, "
                       "ablations/NAME); default: local")
        p.add_argument("overrides", nargs="*", metavar="key=value")

    p = sub.add_parser("eval", help="RLEF rollouts of a model: pass@1, 1@T, pass@k")
    p.add_argument("--model", help="the model to evaluate (wins over model.name)")
    p.add_argument("--adapter", help="a peft LoRA dir (a LoRA run's policy/adapter) served on top of --model "
                   "through vLLM's LoRA support: the policy exactly as trained, not merged into bf16 weights")
    p.add_argument("--dataset", help="problems to evaluate on (wins over data.eval)")
    p.add_argument("--turns", type=int, help="attempts per rollout (default: rollout.max_turns)")
    p.add_argument("--samples", type=int, default=1, help="rollouts per problem")
    p.add_argument("--limit", type=int, help="only the first N problems (after --skip)")
    p.add_argument("--skip", type=int, default=0, help="leave out the first N problems")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (RLEF reports 1@3 at 0.2)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--out", help="output dir (default: run.out_dir/eval-DATASET-TURNSturn)")
    p.add_argument("--also", nargs=3, action="append", metavar=("DATASET", "LIMIT", "OUT"),
                   help="evaluate DATASET's first LIMIT problems (0 = all) too, into OUT, through the same engine "
                        "in the same batch (repeatable)")
    with_config(p)
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("train", help="RLEF training: rollouts, PPO updates, weight pushes, checkpoints")
    p.add_argument("--out", dest="run_dir", metavar="RUN_DIR", help="the run dir (wins over run.out_dir)")
    p.add_argument("--run-dir", dest="run_dir", help=argparse.SUPPRESS)  # the name before --out
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    with_config(p)
    p.set_defaults(fn=cmd_train)

    prm = sub.add_parser("prm", help="label code lines by binary search over prefixes, train the PRM").add_subparsers(dest="action", required=True)
    p = prm.add_parser("label", help="line labels by binary search over prefixes (prm.label.*)")
    with_config(p)
    p.set_defaults(fn=cmd_prm_label)
    p = prm.add_parser("train", help="train the PRM on the labels; held-out accuracy, AUC (prm.train.*)")
    with_config(p)
    p.set_defaults(fn=cmd_prm_train)

    p = sub.add_parser("learn", help="the learning recipe: base eval, train per seed, trained eval, paired report")
    from proctor.studies.learn import add_arguments as learn_arguments

    learn_arguments(p)
    p.set_defaults(fn=cmd_learn)
    study = sub.add_parser("study", help="the ablations trained under a time budget, evaluated, reported").add_subparsers(
        dest="action", required=True)
    from proctor.studies.study import add_arguments

    for action, text in (("start", "run the study in the background"), ("run", "run the study in the foreground")):
        p = study.add_parser(action, help=text)
        add_arguments(p)
        p.set_defaults(fn=cmd_study)
    for action, text, runs in (("report", "write OUT/report.md and PNGs from the arms finished so far", "runs/study"),
                               ("seeds", "pair the arms over seeds: --runs A,B, one study run dir per seed", None)):
        p = study.add_parser(action, help=text)
        p.add_argument("--out", default="runs/study/report" if runs else "runs/study-seeds/report")
        p.add_argument("--runs", default=runs, required=runs is None)
        p.set_defaults(fn=cmd_study)

    p = sub.add_parser("plot", help="PNG learning curves of a training run")
    p.add_argument("run_dir")
    p.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")
    p.set_defaults(fn=cmd_plot)

    sandbox = sub.add_parser("sandbox", help="judge solutions in the sandbox, or serve the judge over HTTP").add_subparsers(dest="action", required=True)
    p = sandbox.add_parser("judge", help="judge solutions against problems' tests")
    p.add_argument("--dataset", help="problems: a file or any dataset spec (bundled, humaneval, ...); required")
    p.add_argument("--problems", dest="dataset", help=argparse.SUPPRESS)  # the name before --dataset
    p.add_argument("--solutions", required=True, help='JSONL rows {"id", "code", "tag"?}')
    p.add_argument("--tests", choices=["public", "private", "all"], default="all")
    p.add_argument("--out", help="write result rows here (default: stdout)")
    with_config(p)
    p.set_defaults(fn=cmd_sandbox_judge)
    p = sandbox.add_parser("serve", help="serve the judge over HTTP (Ray Serve)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help="bearer token; required when --host is not loopback")
    with_config(p)
    p.set_defaults(fn=cmd_sandbox_serve)

    p = sub.add_parser("bench", help="benchmarks (proctor.bench.NAME); the last line printed is one JSON object")
    p.add_argument("name")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_bench)

    cfg = sub.add_parser("config", help="print the resolved config (--explain: with each key's description)").add_subparsers(dest="action", required=True)
    p = cfg.add_parser("show", help="print the resolved config")
    p.add_argument("--explain", action="store_true", help="each key with its description and the commands that read it")
    with_config(p)
    p.set_defaults(fn=cmd_config_show)
    ap.epilog = _command_list(sub)
    return ap


# `proctor --help`: the user's commands first, the research workflow under its own heading.
COMMAND_GROUPS = (
    ("train and evaluate", ("train", "eval", "plot")),
    ("data, models, configs", ("data", "model", "config")),
    ("judge, benchmarks", ("sandbox", "bench")),
    ("process reward model (PSGPO)", ("prm",)),
    ("research workflow: whole-run experiments, each stage a proctor subprocess", ("learn", "study")),
)


def _command_list(sub) -> str:
    helps = {a.dest: a.help for a in sub._choices_actions}
    grouped = [c for _, cmds in COMMAND_GROUPS for c in cmds]
    assert sorted(grouped) == sorted(sub.choices), "every command in exactly one group"
    width = max(map(len, grouped)) + 2
    return "\n\n".join(f"{title}:\n" + "\n".join(f"  {c:<{width}}{helps[c]}" for c in cmds)
                       for title, cmds in COMMAND_GROUPS)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may sit anywhere among the options (argparse takes positionals in one run only)
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    signals.install()
    try:
        return args.fn(args)
    except (ConfigError, DataError, ModelError, FetchError, SandboxUnavailable) as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: what was finished is saved by the command
        return signals.exit_code(e)


if __name__ == "__main__":
    sys.exit(main())
