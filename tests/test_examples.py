"""examples/: each example that can run on CPU runs here as a user would run it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proctor.cluster.config import load_config
from proctor.problems import load_problems, load_solutions
from proctor.sandbox_pool.judge import judge_many

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def test_my_problems_load_and_their_solutions_pass(sandbox):
    problems = load_problems(str(EXAMPLES / "my_problems.jsonl"))
    assert sorted(p.kind for p in problems) == ["assert", "assert", "stdin_stdout", "stdin_stdout"]
    assert all(p.public_tests and p.private_tests for p in problems)
    by_id = {p.id: p for p in problems}
    solutions = load_solutions(EXAMPLES / "my_solutions.jsonl", by_id)
    verdicts = judge_many(sandbox, [(by_id[s["id"]], s["code"]) for s in solutions], "all")
    assert [v.verdict for v in verdicts] == ["pass"] * 4, [v.tests for v in verdicts if v.verdict != "pass"]
    # the private tests are not the public ones: a solution that fits the examples only fails
    overfit = "def second_largest(xs):\n    return {(4, 1, 4, 3): 3}.get(tuple(xs))\n"
    (verdict,) = judge_many(sandbox, [(by_id["ex-002-second-largest"], overfit)], "all")
    assert verdict.verdict == "fail" and all(t.status == "pass" for t in verdict.tests if t.public)


def test_convert_hf_dataset_writes_the_problem_format(tmp_path):
    rows = [{"task_id": 1, "text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b",
             "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]},
            {"task_id": 2, "text": "Reverse a string.", "code": "def rev(s):\n    return s[::-1]",
             "test_list": ["assert rev('ab') == 'ba'"], "test_setup_code": "import math"}]
    src, out = tmp_path / "mbpp-like.jsonl", tmp_path / "out" / "problems.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = subprocess.run([sys.executable, str(EXAMPLES / "convert_hf_dataset.py"), str(src), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    problems = load_problems(str(out))
    assert [p.id for p in problems] == ["mbpp/1", "mbpp/2"] and problems[0].entry_point == "add"
    assert len(problems[0].public_tests) == 1 and len(problems[0].private_tests) == 2
    assert problems[1].private_tests[0].code.startswith("import math\n")
    src.write_text('{"task_id": 3, "text": "no tests"}\n')
    proc = subprocess.run([sys.executable, str(EXAMPLES / "convert_hf_dataset.py"), str(src), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "line 1" in proc.stderr and "test_list" in proc.stderr


def test_the_gpu_example_config_is_valid():
    cfg = load_config(EXAMPLES / "gpu-1.yaml")
    assert cfg.model.name == "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    assert cfg.run.learner_gpus + cfg.run.engine_gpus == 1 and cfg.rollout.gpu_memory_utilization < 0.5


@pytest.mark.slow
def test_one_command_trains_on_my_problems(tiny_model_dir, tmp_path):
    """The examples' one command, on the tiny model (the embedded model is the same command, slower)."""
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "proctor.cluster.cli", "train", "--config", "tiny",
                           f"data.train={EXAMPLES / 'my_problems.jsonl'}", "--out", str(run),
                           f"model.name={tiny_model_dir}", "run.iterations=1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 problems from" in proc.stdout
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1]
