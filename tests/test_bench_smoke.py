"""Every ``proctor bench NAME`` runs in a short form through the CLI, on the tiny model: a name moved
or an import broken in a benchmark fails here, not in a user's hands."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from proctor.cluster.cli import main

TESTS = Path(__file__).resolve().parent
TINY = ["rollout.max_model_len=1024", "rollout.kv_cache_gib=1"]  # the tiny model's context is 2048


def _bench(*argv) -> dict:
    """``proctor bench ...`` in its own process (a benchmark starts and stops a Ray of its own); its
    last line is one JSON object."""
    # as from a user's shell: not the process-group variables an in-process learner of an earlier test
    # left in this process (TRL's trainer would try to listen on that test's port)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-m", "proctor.cluster.cli", "bench", *argv], capture_output=True,
                          text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_benchmark_has_a_short_form_in_the_suite(capsys):
    assert main(["bench", "no-such-bench"]) == 2
    names = re.search(r"available: (.+)", capsys.readouterr().out).group(1).split(", ")
    assert "weight-sync" in names and "iteration" in names
    suite = "".join(p.read_text() for p in TESTS.glob("test_bench*.py"))
    untested = [n for n in names if f"proctor.bench.{n.replace('-', '_')} import main" not in suite
                and f'"bench", "{n}"' not in suite and f'_bench("{n}"' not in suite]
    assert untested == [], f"benchmarks without a test that runs them: {untested}"


@pytest.mark.slow
def test_weight_sync_to_an_engine(tiny_model_dir):
    result = _bench("weight-sync", "--engines", "1", "--repeats", "1", f"model.name={tiny_model_dir}", *TINY,
                    "learner.dtype=float32", "rollout.dtype=float32")
    assert result["engines"] == 1 and result["bytes"] > 0
    assert result["push_s"] > 0 and result["ratio_push_vs_memcpy"] > 0


@pytest.mark.slow
def test_engine_threads_side_by_side(tiny_model_dir):
    result = _bench("engine-threads", "--episodes", "2", "--max-tokens", "8", "--threads", "1", "--source", "bundled",
                    f"model.name={tiny_model_dir}", *TINY, "rollout.dtype=float32")
    sides = [v for v in result.values() if isinstance(v, dict) and "tokens_per_s" in v]
    assert len(sides) == 2 and all(s["tokens"] > 0 for s in sides)


@pytest.mark.slow
def test_iteration_against_trl(tiny_model_dir):
    pytest.importorskip("trl", reason="the bench extra (trl) is not installed")
    result = _bench("iteration", "--problems", "1", "--samples", "2", "--max-tokens", "8", "--trl-dtypes", "float32",
                    f"model.name={tiny_model_dir}", *TINY, "rollout.dtype=float32", "learner.dtype=float32")
    assert result["proctor_grpo"]["iteration_s"] > 0 and result["trl_grpo"]["iteration_s"] > 0
    assert result["ratio_proctor_vs_trl"] > 0
