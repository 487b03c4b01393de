"""``proctor bench sandbox [--n N] [--slots S] [--limit L]``: test executions per second on the
HumanEval canonical solutions (public tests + the private check, each its own execution), N times
over, through three executors one after the other:

- ``pool``: proctor's SandboxPool (Ray, 1 actor, fork server with S slots); start-up timed apart;
- ``bwrap_per_run``: ``Sandbox("bwrap")``, one unprivileged bubblewrap per execution, S threads;
- ``subprocess_per_run``: no isolation, a bare ``python3 -c`` per execution, S threads.

Latency per execution: the sandbox's ``wall_s`` for pool and bwrap (time inside the sandbox, from
fork to exit; bwrap's ``e2e_*`` adds its start-up), the wall clock of each subprocess for the baseline.
Every canonical solution must pass: otherwise a warning, and exit status 1.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import proctor.cluster.ray_local  # noqa: F401  (before anything imports ray)
from proctor.cluster.progress import make_console
from proctor.problems.format import Problem
from proctor.problems.humaneval import convert, humaneval_path
from proctor.sandbox_pool.judge import DEFAULT_OUTPUT_BYTES, request, selected_tests, test_result

EXECUTORS = ("pool", "bwrap_per_run", "subprocess_per_run")


def load(limit: int | None) -> list[tuple[Problem, str]]:
    """(problem, prompt + canonical solution) for the first ``limit`` HumanEval problems."""
    with gzip.open(humaneval_path(), "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()][:limit]
    return [(convert(row, row["task_id"]), row["prompt"] + row["canonical_solution"]) for row in rows]


def figures(executions: int, passed: int, wall_s: float, lat_s: list[float]) -> dict:
    q = statistics.quantiles(lat_s, n=100, method="inclusive") if len(lat_s) > 1 else lat_s * 99
    return {"executions": executions, "passed": passed, "wall_s": round(wall_s, 3),
            "exec_per_s": round(executions / wall_s, 2), "p50_ms": round(q[49] * 1e3, 1),
            "p95_ms": round(q[94] * 1e3, 1)}


def run_pool(items, slots: int, progress: Progress) -> dict:
    from proctor.cluster.ray_local import init_ray

    t0 = time.perf_counter()
    init_ray(num_cpus=2)  # returns at once if Ray is already up (tests)
    from proctor.sandbox_pool.pool import SandboxPool

    pool = SandboxPool(actors=1, backend="forkserver", slots=slots)
    startup = time.perf_counter() - t0
    task = progress.add_task("pool (candidates)", total=len(items))
    try:
        t0 = time.perf_counter()
        verdicts = pool.judge_many(items, "all", progress=lambda: progress.advance(task))
        wall = time.perf_counter() - t0
    finally:
        pool.shutdown()
    tests = [t for v in verdicts for t in v.tests]
    return {**figures(len(tests), sum(t.status == "pass" for t in tests), wall, [t.wall_s for t in tests]),
            "startup_s": round(startup, 3)}


def run_threads(name: str, execs, one, slots: int, progress: Progress) -> dict:
    """Runs ``one(problem, code, test, public) -> (passed, latency_s, e2e_s)`` over ``execs`` on ``slots`` threads."""
    task = progress.add_task(f"{name} (executions)", total=len(execs))

    def step(e):
        out = one(*e)
        progress.advance(task)
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=slots) as ex:
        results = list(ex.map(step, execs))
    wall = time.perf_counter() - t0
    out = figures(len(results), sum(r[0] for r in results), wall, [r[1] for r in results])
    if name == "bwrap_per_run":
        e2e = figures(len(results), 0, wall, [r[2] for r in results])
        out |= {"e2e_p50_ms": e2e["p50_ms"], "e2e_p95_ms": e2e["p95_ms"]}
    return out


def bwrap_one(sandbox):
    def one(problem, code, test, public):
        t0 = time.perf_counter()
        res = sandbox.run(request(problem, code, test, DEFAULT_OUTPUT_BYTES))
        e2e = time.perf_counter() - t0
        r = test_result(test, public, res)
        return r.status == "pass", r.wall_s or e2e, e2e

    return one


def subprocess_one(problem, code, test, public):
    t0 = time.perf_counter()
    try:
        ok = subprocess.run(["/usr/bin/python3", "-c", f"{code}\n\n{test.code}\n"], capture_output=True,
                            timeout=problem.time_limit_s).returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    wall = time.perf_counter() - t0
    return ok, wall, wall


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="proctor bench sandbox", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2, help="repeat the problem set N times (default 2)")
    ap.add_argument("--slots", type=int, default=2, help="pool slots, and threads of the others (default 2)")
    ap.add_argument("--limit", type=int, default=None, help="only the first L problems")
    args = ap.parse_args(argv)
    if args.n < 1 or args.slots < 1 or (args.limit is not None and args.limit < 1):
        ap.error("--n, --slots and --limit must be at least 1")
    console = make_console()

    import ray

    from proctor.sandbox_pool.runner import Sandbox

    items = load(args.limit) * args.n
    execs = [(p, c, t, pub) for p, c in items for t, pub in selected_tests(p, "all")]
    ray_was_up = ray.is_initialized()
    res: dict[str, dict] = {}
    cols = (TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*cols, console=console) as progress:
            res["pool"] = run_pool(items, args.slots, progress)
            with Sandbox("bwrap", slots=args.slots) as sb:
                res["bwrap_per_run"] = run_threads("bwrap_per_run", execs, bwrap_one(sb), args.slots, progress)
            res["subprocess_per_run"] = run_threads("subprocess_per_run", execs, subprocess_one, args.slots,
                                                    progress)
    finally:
        if not ray_was_up and ray.is_initialized():
            ray.shutdown()

    table = Table(title=f"HumanEval canonical solutions x{args.n}: {len(execs)} executions each")
    for col in ("executor", "passed", "wall s", "exec/s", "p50 ms", "p95 ms"):
        table.add_column(col, justify="left" if col == "executor" else "right")
    for name in EXECUTORS:
        r = res[name]
        table.add_row(name, f"{r['passed']}/{r['executions']}", f"{r['wall_s']:.1f}", f"{r['exec_per_s']:.1f}",
                      f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}")
    console.print(table)
    bw = res["bwrap_per_run"]
    console.print(f"pool start-up (Ray, actor, fork server): {res['pool']['startup_s']:.1f} s, not timed above\n"
                  f"bwrap_per_run p50/p95 with bwrap's start-up: {bw['e2e_p50_ms']:.0f}/{bw['e2e_p95_ms']:.0f} ms",
                  highlight=False)

    ratio = {f"ratio_pool_vs_{k.removesuffix('_per_run')}": round(res["pool"]["exec_per_s"] / res[k]["exec_per_s"], 3)
             for k in EXECUTORS[1:]}
    failed = [k for k in EXECUTORS if res[k]["passed"] != res[k]["executions"]]
    if failed:
        console.print(f"[bold red]warning:[/] canonical solutions failed on {', '.join(failed)}: "
                      "the figures are not meaningful", highlight=False)
    print(json.dumps({"bench": "sandbox", "n": args.n, "problems": len(items) // max(args.n, 1),
                      "executions": len(execs), "slots": args.slots, **res, **ratio}))
    return 1 if failed else 0
