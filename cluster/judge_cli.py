"""``proctor sandbox judge`` and ``proctor sandbox serve``: the sandboxed judge from the command line."""

from __future__ import annotations

import collections
import json
import sys
import time

from proctor.cluster.config import ConfigError, load_config
from proctor.cluster.progress import make_console
from proctor.problems import load_problems, load_solutions

console = make_console()


def cmd_sandbox_judge(args) -> int:
    """Judge solutions (JSONL rows {id, code, tag?}) against problems; one JSON row out per solution."""
    from proctor.cluster.progress import progress
    from proctor.sandbox_pool.feedback import feedback_text
    from proctor.sandbox_pool.judge import judge_many
    from proctor.sandbox_pool.runner import Sandbox

    if not args.dataset:
        console.print("[bold red]error:[/] proctor sandbox judge needs --dataset (the problems the solutions answer)")
        return 2
    cfg = load_config(args.config, args.overrides)
    problems = {p.id: p for p in load_problems(args.dataset)}
    solutions = load_solutions(args.solutions, problems)
    out = open(args.out, "w") if args.out else sys.stdout  # noqa: SIM115 - closed below when a file
    counts = collections.Counter()
    t0 = time.perf_counter()
    with Sandbox(cfg.sandbox.backend, cfg.sandbox.slots) as sandbox, \
            progress(make_console(stderr=True), "judging", len(solutions)) as advance:
        verdicts = judge_many(sandbox, [(problems[s["id"]], s["code"]) for s in solutions], args.tests,
                              progress=advance, output_bytes=cfg.sandbox.max_output_bytes)
    for s, v in zip(solutions, verdicts):
        counts[v.verdict] += 1
        row = {"id": s["id"], "tag": s["tag"], "verdict": v.verdict,
               "tests": [{"status": t.status, "public": t.public, "detail": t.detail, "wall_s": round(t.wall_s, 4)}
                         for t in v.tests],
               "feedback": feedback_text(v)}
        out.write(json.dumps(row) + "\n")
    if args.out:
        out.close()
    summary = (f"judged {len(solutions)} solutions in {time.perf_counter() - t0:.1f} s: "
               f"{counts['pass']} pass, {counts['fail']} fail, {counts['infra_error']} infra_error")
    make_console(stderr=True).print(summary + (f" -> {args.out}" if args.out else ""))
    return 0


def cmd_sandbox_serve(args) -> int:
    """Serve the judge over HTTP until interrupted."""
    from proctor.cluster.ray_local import init_ray
    from proctor.sandbox_pool import serve as judge_service

    cfg = load_config(args.config, args.overrides)
    try:
        judge_service.check_bind(args.host, args.token)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    init_ray(cfg.run.ray_address)
    url = judge_service.start(args.host, args.port, args.token, cfg.sandbox.backend, cfg.sandbox.slots)
    console.print(f"judge listening on {url} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
