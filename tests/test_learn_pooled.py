"""proctor learn --pool: every learning report's per-problem outcomes, pooled over runs."""

import json

import pytest

from proctor.studies.pooled import pool, read_runs, write_pooled

IDS = [f"P/{i}" for i in range(6)]


def _write(reports, name, seeds: dict[int, tuple[set, set]]):
    d = reports / name
    d.mkdir(parents=True)
    rows = [{"seed": s, "id": p, "base_pass1": p in base, "trained_pass1": p in trained, "base_1at3": False,
             "trained_1at3": False} for s, (base, trained) in seeds.items() for p in IDS]
    (d / "per_problem.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_pool_counts_runs_problems_and_base_settings(tmp_path):
    base_a, base_b = {"P/0", "P/1"}, {"P/0", "P/2"}  # two machines: P/1 and P/2 flip
    _write(tmp_path, "learning-x", {0: (base_a, {"P/0", "P/1", "P/3", "P/4"}),  # +2
                                    1: (base_a, {"P/0", "P/3"})})  # +1 -1: unchanged
    _write(tmp_path, "learning-y", {0: (base_b, {"P/2", "P/3"})})  # +1 -1
    _write(tmp_path, "learning-z", {3: (base_b, {"P/3"})})  # +1 -2: down
    res = pool(read_runs(tmp_path))
    assert res["n_runs"] == 4
    assert [(r["report"], r["seed"], r["trained"] - r["base"]) for r in res["runs"]] == [
        ("learning-x", 0, 2), ("learning-x", 1, 0), ("learning-y", 0, 0), ("learning-z", 3, -1)]
    assert (res["runs_up"], res["runs_down"], res["runs_same"]) == (1, 1, 2)
    assert res["sign_test_p"] == 1.0
    assert res["gain_mean"] == pytest.approx(0.25)
    assert res["most_gained"][0] == ["P/3", 4, 0]  # gained by every run
    assert ["P/0", 0, 2] in res["most_lost"]
    settings = {s["name"]: s for s in res["base_settings"]}
    assert settings["A"]["reports"] == ["learning-x"] and settings["B"]["reports"] == ["learning-y", "learning-z"]
    assert settings["A"]["flips"] == {"B": 2} and settings["B"]["pass1"] == 2
    assert (settings["A"]["runs"], settings["A"]["trained_mean"]) == (2, 3) and settings["B"]["trained_mean"] == 1.5


def test_pool_sign_test_over_runs(tmp_path):
    for i in range(6):  # six runs, each one problem up
        _write(tmp_path, f"learning-{i}", {0: (set(), {"P/0"})})  # identical files: still six runs
    res = pool(read_runs(tmp_path))
    assert res["runs_up"] == 6 and res["sign_test_p"] == pytest.approx(2 / 2**6)
    assert res["significant_up"] == 0  # one problem is never significant alone
    (power,) = [p for p in res["power"] if p["report"] == "learning-0"]
    assert (power["gain_share"], power["flips"], power["net_needed"], power["seed_power"]) == (1.0, 1, None, 0.0)


def test_pool_power_by_report(tmp_path):
    ids = {f"P/{i}" for i in range(6)}
    _write(tmp_path, "learning-up", {0: (set(), ids), 1: (set(), ids)})  # 6 / 0 twice: significant each time
    _write(tmp_path, "learning-mixed", {0: ({"P/0", "P/1"}, {"P/2", "P/3"})})  # +2 / -2
    power = {p["report"]: p for p in pool(read_runs(tmp_path))["power"]}
    assert power["learning-up"]["seed_power"] == 1.0 and power["learning-up"]["two_seeds"] == 1.0
    assert (power["learning-up"]["gained"], power["learning-up"]["flips"], power["learning-up"]["net_needed"]) == (12, 6, 6)
    assert power["learning-mixed"]["gain_share"] == 0.5 and power["learning-mixed"]["net_needed"] is None
    assert "| learning-up | 2 | +12 / -0 | 1.00 | 6 | 6 | 1.00 | 1.00 |" in write_pooled(tmp_path).read_text()


def test_write_pooled_skips_its_own_output_and_names_bad_rows(tmp_path):
    _write(tmp_path, "learning-a", {0: ({"P/0"}, {"P/1"})})
    report = write_pooled(tmp_path)
    assert "1 runs" in report.read_text() and (tmp_path / "learning-pooled" / "pooled.json").exists()
    pooled = tmp_path / "learning-pooled" / "per_problem.jsonl"  # the pool's own folder is never an input
    pooled.write_text((tmp_path / "learning-a" / "per_problem.jsonl").read_text())
    assert pool(read_runs(tmp_path))["n_runs"] == 1
    copy = tmp_path / "learning"  # the current recipe's report, a copy of learning-a: counted once, as learning-a
    copy.mkdir()
    (copy / "per_problem.jsonl").write_text((tmp_path / "learning-a" / "per_problem.jsonl").read_text())
    assert [r["report"] for r in read_runs(tmp_path)] == ["learning-a"]
    (copy / "per_problem.jsonl").write_text((tmp_path / "learning-a" / "per_problem.jsonl").read_text().replace(
        '"trained_pass1": true', '"trained_pass1": false'))  # its own run, not a copy: counted
    assert [r["report"] for r in read_runs(tmp_path)] == ["learning", "learning-a"]
    bad = tmp_path / "learning-b"
    bad.mkdir()
    (bad / "per_problem.jsonl").write_text('{"seed": 0, "id": "P/0"}\n')
    with pytest.raises(ValueError, match=r"learning-b/per_problem.jsonl line 1: needs seed, id"):
        read_runs(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no .*to pool"):
        read_runs(tmp_path / "empty")
