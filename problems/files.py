"""Reading problem files: rows through ``datasets``, errors that name the file, line and field."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from proctor.problems.fetch import cache_root
from proctor.problems.format import Problem, ProblemError, parse_problem

LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".gz": "json", ".parquet": "parquet"}


class DataError(ValueError):
    """A dataset that cannot be loaded; the message names the file, row and field."""


def rows_from_file(path: Path) -> Iterable[dict]:
    """Rows of a local file through ``datasets`` (arrow schema nulls for absent keys are dropped)."""
    import datasets

    fmt = LOCAL_SUFFIXES.get(path.suffix)
    if fmt is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .jsonl, .json or .parquet)")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train", cache_dir=datasets_cache())
    except Exception as e:
        if fmt == "json":
            _raise_first_bad_json_line(path)
        raise DataError(f"{path}: could not be read as {fmt}: {e}") from None
    return (_drop_nulls(row) for row in ds)


def datasets_cache() -> str:
    return str(cache_root() / "datasets")


def _drop_nulls(value):
    # Arrow unifies the keys of all rows: a test dict of kind assert gets input/output = None.
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _raise_first_bad_json_line(path: Path) -> None:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {lineno}: not valid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path} line {lineno}: a row must be a JSON object, got {type(row).__name__}")
            try:
                parse_problem(row, f"{path} line {lineno} (id {row.get('id')!r})")
            except ProblemError as e:
                raise DataError(str(e)) from None


def line_numbers(path: Path) -> list[int]:
    """1-based line number of each non-blank line of a JSONL file (row i is on line result[i])."""
    if path.suffix != ".jsonl":
        return []
    with open(path, "rb") as f:
        return [n for n, line in enumerate(f, 1) if line.strip()]


def where(path: Path, index: int, lines: list[int], row: dict, id_key: str = "id") -> str:
    pos = f"line {lines[index]}" if index < len(lines) else f"row {index}"
    return f"{path} {pos} (id {row.get(id_key)!r})"


def load_native(path: Path) -> list[Problem]:
    lines = line_numbers(path)
    problems = []
    for i, row in enumerate(rows_from_file(path)):
        try:
            problems.append(parse_problem(row, where(path, i, lines, row)))
        except ProblemError as e:
            raise DataError(str(e)) from None
    return problems


Converter = Callable[[dict, str], Problem]  # (row, where it is) -> Problem: a hub-schema adapter
