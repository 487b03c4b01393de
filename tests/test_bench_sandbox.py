"""``proctor bench sandbox`` on 5 problems: one JSON line last, every canonical solution passes."""

import json

import pytest

from proctor.cluster import cli

EXECUTORS = ("pool", "bwrap_per_run", "subprocess_per_run")


def test_bench_sandbox_reports_all_executors(ray_local, capsys):
    rc = cli.main(["bench", "sandbox", "--n", "1", "--limit", "5"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0, "\n".join(out[-20:])
    data = json.loads(out[-1])
    assert data["bench"] == "sandbox" and data["n"] == 1 and data["problems"] == 5
    assert data["executions"] > 5, "public tests and the private check are separate executions"
    for name in EXECUTORS:
        r = data[name]
        for key in ("executions", "passed", "wall_s", "exec_per_s", "p50_ms", "p95_ms"):
            assert key in r, f"{name}.{key}"
        assert r["executions"] == data["executions"]
        assert r["passed"] == r["executions"], f"{name}: a canonical solution failed"
        assert r["exec_per_s"] > 0 and 0 < r["p50_ms"] <= r["p95_ms"]
    assert data["pool"]["startup_s"] >= 0
    for other in ("bwrap", "subprocess"):
        expected = data["pool"]["exec_per_s"] / data[f"{other}_per_run"]["exec_per_s"]
        assert data[f"ratio_pool_vs_{other}"] == pytest.approx(expected, rel=1e-3, abs=1e-3)
    import ray

    assert ray.is_initialized(), "the session's Ray must survive the benchmark"


def test_a_failing_solution_makes_the_benchmark_fail(ray_local, capsys, monkeypatch):
    from proctor.bench import sandbox

    real_load = sandbox.load
    monkeypatch.setattr(sandbox, "load", lambda limit: [(p, "pass\n") for p, _ in real_load(limit)])
    assert cli.main(["bench", "sandbox", "--n", "1", "--limit", "1"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert any("warning" in line for line in out)
    data = json.loads(out[-1])
    assert all(data[name]["passed"] == 0 for name in EXECUTORS)
