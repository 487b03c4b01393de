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


def test_a_run_log_keeps_every_line_with_a_time_and_no_terminal_codes(tmp_path):
    """What a console prints inside ``log_to`` lands in the log too: timestamped plain lines, a
    terminal's progress bar (colours, cursor moves, redraws) reduced to readable lines, nothing after."""
    import re

    from proctor.cluster.progress import log_to, progress_of

    log = tmp_path / "console.log"
    for terminal in (False, True):
        out = io.StringIO()
        console = Console(file=out, force_terminal=terminal, width=120)
        with log_to(console, log):
            console.print(f"[bold red]error:[/] terminal={terminal}", highlight=False)
            with progress_of(console, "learner minibatches") as update:
                for i in range(1, 5):
                    update(i, 4)
        console.print("not logged")
        assert "terminal=" in out.getvalue() and "not logged" in out.getvalue()
    lines = log.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
    assert all(re.match(stamp, line) for line in lines), lines
    assert not any("\x1b" in line or "\r" in line for line in lines)
    text = "\n".join(lines)
    assert "error: terminal=False" in text and "error: terminal=True" in text and "not logged" not in text
    assert "learner minibatches: 4/4 (100%)" in text  # the plain form, off a terminal
