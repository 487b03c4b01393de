import io

from rich.console import Console

from cluster.progress import progress


def test_logs_a_line_every_tenth_when_not_a_terminal():
    out = io.StringIO()
    with progress(Console(file=out, force_terminal=False, width=200), "judging", 50) as advance:
        for _ in range(50):
            advance()
    lines = out.getvalue().splitlines()
    assert lines[0] == "judging: 0/50"
    assert lines[-1].startswith("judging: 50/50 (100%)")
    assert len(lines) == 11  # the start, then every 10%
