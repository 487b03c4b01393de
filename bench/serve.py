"""``proctor bench serve [--clients 64] [--seconds 60]``: the judge service (the deployment behind
``proctor sandbox serve``) on loopback under concurrent clients, bounded in count and time.

Each client loops until the time is up (or ``--max-requests`` in all), drawing a request kind:
correct and wrong HumanEval solutions (must get their verdict), malformed JSON (400), a 10 MB body
(413), a problem with an unknown field (422 naming it), a slow writer (the body in pieces, 0.3 s
apart) and a slow reader (the response read in small pieces). Valid requests that get no answer or
a wrong verdict are counted; the service's processes' memory (Ray Serve replica and proxy) is
sampled every second. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import socket
import statistics
import threading
import time

import psutil

import proctor.cluster.ray_local  # noqa: F401  (before anything imports ray)
from proctor.bench.sandbox import load
from proctor.cluster.progress import make_console

KINDS = {"correct": 30, "wrong": 30, "malformed": 8, "oversized": 8, "unknown_field": 8, "slow_writer": 8,
         "slow_reader": 8}
VALID = {"correct", "wrong", "slow_writer", "slow_reader"}
BIG = b"x" * (10 << 20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_request(port: int, kind: str, problem: dict, code: str, timeout: float = 120.0) -> tuple[int, dict]:
    """Send one request of ``kind``; returns (HTTP status, JSON body), or (0, {"error": ...}) when the
    connection failed."""
    if kind == "malformed":
        body = b'{"problem": {"id": '
    elif kind == "oversized":
        body = BIG
    elif kind == "unknown_field":
        body = json.dumps({"problem": {**problem, "difficulty": "easy"}, "code": code}).encode()
    else:
        body = json.dumps({"problem": problem, "code": code}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("POST", "/judge")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if kind == "slow_writer":
            step = max(1, len(body) // 4)
            for i in range(0, len(body), step):
                conn.send(body[i:i + step])
                time.sleep(0.3)
        else:
            try:
                conn.send(body)
            except (BrokenPipeError, ConnectionResetError):
                if kind != "oversized":  # the service may answer 413 and close before all 10 MB are sent
                    raise
        resp = conn.getresponse()
        if kind == "slow_reader":
            data = b""
            while chunk := resp.read(256):
                data += chunk
                time.sleep(0.05)
        else:
            data = resp.read()
        return resp.status, json.loads(data or b"{}")
    except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
        return 0, {"error": f"{type(e).__name__}: {e}"}
    finally:
        conn.close()


def expected(kind: str, status: int, body: dict) -> bool:
    if kind in ("correct", "slow_writer", "slow_reader"):
        return status == 200 and body.get("verdict") == "pass"
    if kind == "wrong":
        return status == 200 and body.get("verdict") == "fail"
    if kind == "malformed":
        return status == 400 and "not JSON" in body.get("error", "")
    if kind == "oversized":
        return status == 413 and "limit" in body.get("error", "")
    return status == 422 and "difficulty" in body.get("error", "")


def service_rss_mib() -> float:
    total = 0
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ServeReplica" in cmd or "ProxyActor" in cmd or "ServeController" in cmd:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
    return total / 2**20


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="proctor bench serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-requests", type=int, default=100_000, help="stop after this many in all")
    ap.add_argument("--slots", type=int, default=2, help="sandbox slots of the service")
    args = ap.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.max_requests < 1:
        ap.error("--clients, --seconds and --max-requests must be positive")
    console = make_console(stderr=True)

    import ray
    from ray import serve

    from proctor.cluster.ray_local import init_ray
    from proctor.sandbox_pool.serve import start

    items = [(p.model_dump(mode="json"), canonical, p.starter_code + "    pass\n") for p, canonical in load(40)]
    ray_was_up = ray.is_initialized()
    init_ray(num_cpus=2)
    port = _free_port()
    start("127.0.0.1", port, None, "auto", args.slots)
    console.print(f"judge service on 127.0.0.1:{port}: {args.clients} clients for {args.seconds:g} s", highlight=False)
    rss = [service_rss_mib()]
    results: list[tuple[str, bool, float, int]] = []
    lock, stop = threading.Lock(), threading.Event()
    deadline = time.monotonic() + args.seconds

    def sample_memory():
        while not stop.wait(1.0):
            rss.append(service_rss_mib())

    def client(seed: int):
        rng = random.Random(seed)
        while time.monotonic() < deadline and not stop.is_set():
            with lock:
                if len(results) >= args.max_requests:
                    return
            kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
            problem, good, bad = rng.choice(items)
            t0 = time.perf_counter()
            status, body = one_request(port, kind, problem, bad if kind == "wrong" else good)
            with lock:
                results.append((kind, expected(kind, status, body), time.perf_counter() - t0, status))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    alive = one_request(port, "correct", items[0][0], items[0][1])
    serve.shutdown()
    if not ray_was_up:
        ray.shutdown()

    valid = [r for r in results if r[0] in VALID]
    lat = sorted(r[2] for r in valid) or [0.0]
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    out = {"bench": "serve", "clients": args.clients, "seconds": args.seconds, "requests": len(results),
           "valid_requests": len(valid),
           "wrong_verdicts": sum(1 for k, ok, _, s in valid if not ok and s == 200),
           "lost": sum(1 for k, ok, _, s in valid if s != 200),
           "bad_requests": len(results) - len(valid),
           "bad_requests_rejected": sum(1 for k, ok, _, s in results if k not in VALID and ok),
           "bad_requests_unexpected": sum(1 for k, ok, _, s in results if k not in VALID and not ok),
           "by_kind": {k: sum(r[0] == k for r in results) for k in KINDS},
           "p50_ms": round(q[49] * 1e3, 1), "p99_ms": round(q[98] * 1e3, 1),
           "requests_per_s": round(len(results) / args.seconds, 1),
           "rss_mib_start": round(rss[0], 1), "rss_mib_max": round(max(rss), 1),
           "alive_after": expected("correct", *alive)}
    print(json.dumps(out))
    ok = out["wrong_verdicts"] == out["lost"] == out["bad_requests_unexpected"] == 0 and out["alive_after"]
    return 0 if ok else 1
