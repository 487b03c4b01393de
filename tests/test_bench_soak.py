"""``proctor bench soak`` on a short mixed load: every verdict as expected, nothing left running."""

import json

from proctor.bench.soak import main, plan


def test_plan_mixes_canonical_pass_body_and_the_threat_suite():
    runs = plan(40, 10)
    kinds = [k.split(":")[0] for k, *_ in runs]
    assert kinds.count("adversarial") == 4 and kinds.count("canonical") == kinds.count("pass_body") == 18
    assert all(r[1].time_limit_s == 1.0 for r in runs if r[0].startswith("adversarial"))


def test_soak_short_run_has_no_false_pass_and_leaves_no_process(capsys):
    assert main(["--runs", "40", "--adversarial-every", "8"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["runs"] == 40 and out["adversarial_runs"] == 5
    assert out["false_passes"] == out["wrong_fails"] == out["leaked_processes"] == out["adversarial_unexpected"] == 0
    assert out["runs_per_s"] > 0
