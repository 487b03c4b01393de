"""``proctor bench soak [--runs 10000] [--slots 2] [--adversarial-every 20]``: the sandbox under a long
mixed load, judged against known answers.

Runs cycle through the 164 HumanEval problems, alternating each problem's canonical solution (must
pass) and its stub with a ``pass`` body (must fail); every ``--adversarial-every``-th run is the next
case of the threat suite (``sandbox_pool.adversarial``: fake passes, escapes, fork bombs, memory and
output floods; must fail with one of its expected statuses). One sandbox (the fork server as root,
bubblewrap per run otherwise) serves them all, ``--slots`` at a time. Counted: false passes, wrong
fails (a canonical solution failed), adversarial runs without an expected status, processes left
under the sandbox uids afterwards, and the fork server's memory (RSS, with its children) at the
start and end. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import psutil

from proctor.bench.sandbox import load
from proctor.cluster.progress import make_console, progress
from proctor.sandbox_pool.adversarial import ADVERSARIAL
from proctor.sandbox_pool.bwrap import UID_BASE
from proctor.sandbox_pool.judge import judge
from proctor.sandbox_pool.runner import Sandbox


def plan(runs: int, every: int) -> list[tuple[str, object, str, set[str] | None]]:
    """(kind, problem, code, expected statuses) for each run: canonical, pass-body, adversarial."""
    humaneval = load(None)
    out, k, a = [], 0, 0
    for i in range(runs):
        if every and i % every == every - 1:
            name, problem, code, expected = ADVERSARIAL[a % len(ADVERSARIAL)]
            # one-second limits: the timeout cases cost a second each, not the suite's two
            out.append(("adversarial:" + name, problem.model_copy(update={"time_limit_s": 1.0}), code, expected))
            a += 1
            continue
        problem, canonical = humaneval[(k // 2) % len(humaneval)]
        if k % 2 == 0:
            out.append(("canonical", problem, canonical, None))
        else:
            out.append(("pass_body", problem, problem.starter_code + "    pass\n", None))
        k += 1
    return out


def sandbox_processes() -> list[str]:
    ps = subprocess.run(["ps", "-eo", "uid=,pid=,comm="], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if UID_BASE <= int(line.split()[0]) < UID_BASE + 64 * 1000]


def server_rss_mib(sandbox: Sandbox) -> float:
    total = 0
    for server in getattr(sandbox, "servers", []):
        try:
            proc = psutil.Process(server.pid)
            total += sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
        except psutil.NoSuchProcess:
            pass
    return round(total / 2**20, 1)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="proctor bench soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--adversarial-every", type=int, default=20, help="every Nth run is a threat-suite case (0: none)")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.slots < 1 or args.adversarial_every < 0:
        ap.error("--runs and --slots must be at least 1, --adversarial-every at least 0")
    console = make_console(stderr=True)
    runs = plan(args.runs, args.adversarial_every)
    counts = {"false_passes": 0, "wrong_fails": 0, "adversarial_unexpected": 0}
    examples: list[str] = []
    with Sandbox("auto", slots=args.slots) as sandbox:
        judge(sandbox, *runs[0][1:3])  # the fork server is up before its memory is read
        rss_start = server_rss_mib(sandbox)

        def one(run):
            kind, problem, code, expected = run
            v = judge(sandbox, problem, code)
            if kind == "canonical" and not v.passed:
                return "wrong_fails", f"{problem.id} canonical: {[t.status for t in v.tests]}"
            if kind != "canonical" and v.passed:
                return "false_passes", f"{kind} on {problem.id} passed"
            if expected and not ({t.status for t in v.tests} & expected):
                return "adversarial_unexpected", f"{kind}: {[t.status for t in v.tests]}, expected {sorted(expected)}"
            return None, ""

        t0 = time.perf_counter()
        with progress(console, "soak", len(runs)) as advance, ThreadPoolExecutor(args.slots) as ex:
            def step(run):
                out = one(run)
                advance()
                return out
            for bad, why in ex.map(step, runs):
                if bad:
                    counts[bad] += 1
                    examples.append(why)
        wall = time.perf_counter() - t0
        rss_end = server_rss_mib(sandbox)
        backend = sandbox.backend
    time.sleep(1.0)  # the last runs' process groups are reaped
    leaked = sandbox_processes()
    for why in examples[:10]:
        console.print(f"[red]{why}[/]", highlight=False)
    ok = not any(counts.values()) and not leaked
    print(json.dumps({"bench": "soak", "backend": backend, "runs": len(runs), **counts,
                      "adversarial_runs": sum(r[0].startswith("adversarial:") for r in runs),
                      "leaked_processes": len(leaked), "wall_s": round(wall, 1),
                      "runs_per_s": round(len(runs) / wall, 1), "server_rss_mib_start": rss_start,
                      "server_rss_mib_end": rss_end}))
    return 0 if ok else 1
