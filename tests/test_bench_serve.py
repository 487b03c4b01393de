"""``proctor bench serve`` briefly: valid requests all get their verdict, bad ones a 4xx naming the
problem (malformed JSON, a 10 MB body, an unknown problem field), the service stays up."""

import json

import pytest


@pytest.mark.slow
def test_serve_bench_short_run(ray_local, capsys):
    from proctor.bench.serve import main

    rc = main(["--clients", "8", "--seconds", "8"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0, out
    assert out["requests"] > 8 and out["wrong_verdicts"] == 0 and out["lost"] == 0
    assert out["bad_requests_unexpected"] == 0 and out["alive_after"] is True
    assert out["rss_mib_max"] > 0
