import io

from rich.console import Console

from proctor.cluster.progress import progress


def test_logs_a_line_every_tenth_when_not_a_terminal():
    out = io.StringIO()
    with progress(Console(file=out, force_terminal=False, width=200), "judging", 50) as advance:
        for _ in range(50):
            advance()
    lines = out.getvalue().splitlines()
    assert lines[0] == "judging: 0/50"
    assert lines[-1].startswith("judging: 50/50 (100%)")
    assert len(lines) == 11  # the start, then every 10%


def test_console_never_wraps_a_line_off_a_terminal(monkeypatch, capsys):
    """Error messages and machine-readable lines stay whole in logs and pipes, whatever COLUMNS says."""
    from proctor.cluster.progress import make_console

    monkeypatch.setenv("COLUMNS", "40")
    line = "error: /a/rather/long/temporary/path/of/some/length/s.jsonl line 2 (id 'mul'): field id: no problem"
    make_console().print(line, highlight=False)
    make_console(stderr=True).print(line, highlight=False)
    out = capsys.readouterr()
    assert out.out == line + "\n" and out.err == line + "\n"
