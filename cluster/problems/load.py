from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from sandbox_pool.problem import Problem, ProblemError, parse_problem

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".gz": "json", ".parquet": "parquet"}


class DataError(ValueError):
    """A dataset that cannot be loaded; the message names the file, row and field."""


def _rows_from_file(path: Path) -> Iterable[dict]:
    """Rows of a local file through ``datasets`` (arrow schema nulls for absent keys are dropped)."""
    import datasets

    fmt = LOCAL_SUFFIXES.get(path.suffix)
    if fmt is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .jsonl, .json or .parquet)")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train", cache_dir=_datasets_cache())
    except Exception as e:
        if fmt == "json":
            _raise_first_bad_json_line(path)
        raise DataError(f"{path}: could not be read as {fmt}: {e}") from None
    return (_drop_nulls(row) for row in ds)


def _datasets_cache() -> str:
    from cluster.model import cache_root

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


def _line_numbers(path: Path) -> list[int]:
    """1-based line number of each non-blank line of a JSONL file (row i is on line result[i])."""
    if path.suffix != ".jsonl":
        return []
    with open(path, "rb") as f:
        return [n for n, line in enumerate(f, 1) if line.strip()]


def _where(path: Path, index: int, lines: list[int], row: dict, id_key: str = "id") -> str:
    pos = f"line {lines[index]}" if index < len(lines) else f"row {index}"
    return f"{path} {pos} (id {row.get(id_key)!r})"


def load_native(path: Path) -> list[Problem]:
    lines = _line_numbers(path)
    problems = []
    for i, row in enumerate(_rows_from_file(path)):
        try:
            problems.append(parse_problem(row, _where(path, i, lines, row)))
        except ProblemError as e:
            raise DataError(str(e)) from None
    return problems


def load_adapted(adapter: str, source: str) -> list[Problem]:
    from cluster.problems.adapters import ADAPTERS

    convert, id_key, hub_split = ADAPTERS[adapter]
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")):
        rows, lines, where_src = _rows_from_file(path), _line_numbers(path), path
    else:
        rows, lines, where_src = _rows_from_hub(source, hub_split), [], Path(source)
    problems = []
    for i, row in enumerate(rows):
        where = _where(where_src, i, lines, row, id_key)
        try:
            problems.append(convert(row, where))
        except ProblemError as e:
            raise DataError(str(e)) from None
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: not a {adapter} row: {type(e).__name__}: {e}") from None
    return problems


def _rows_from_hub(name: str, split: str) -> Iterable[dict]:
    import datasets

    try:
        return datasets.load_dataset(name, split=split)
    except Exception as e:
        raise DataError(f"could not load hub dataset {name!r} (split {split!r}): {e}") from None


def load_problems(spec: str, limit: int | None = None, skip: int = 0) -> list[Problem]:
    """Load problems from a source spec (see the package docstring); ids must be unique. ``skip``
    leaves out the first N, ``limit`` then keeps the next N."""
    from cluster.problems.adapters import ADAPTERS, HUB_NAMES
    from cluster.problems.humaneval import load_humaneval
    from cluster.problems.mbpp397 import load_mbpp397

    if spec == "bundled":
        problems = load_native(BUNDLED_DIR / "train.jsonl")
    elif spec == "humaneval":
        problems = load_humaneval()
    elif spec == "mbpp397":
        problems = load_mbpp397()
    elif spec in HUB_NAMES:
        problems = load_adapted(HUB_NAMES[spec], spec)
    elif ":" in spec and spec.split(":", 1)[0] in ADAPTERS:
        adapter, source = spec.split(":", 1)
        problems = load_adapted(adapter, source)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataError(
                f"unknown dataset {spec!r}: not a file, and not one of bundled, humaneval, mbpp397, "
                f"{', '.join(a + ':SOURCE' for a in ADAPTERS)}, {', '.join(HUB_NAMES)}"
            )
        problems = load_native(path)
    _check_unique(problems, spec)
    problems = problems[skip:]
    return problems[:limit] if limit else problems


def _check_unique(problems: list[Problem], spec: str) -> None:
    seen = set()
    for p in problems:
        if p.id in seen:
            raise DataError(f"{spec}: problem id {p.id!r} appears more than once")
        seen.add(p.id)


def load_solutions(path: str | Path, problems: dict[str, Problem] | None = None) -> list[dict]:
    """Rows ``{"id", "code", "tag"?}``; with ``problems``, every id must name one of them."""
    path = Path(path)
    out = []
    lines = _line_numbers(path)
    for i, row in enumerate(_rows_from_file(path)):
        where = _where(path, i, lines, row)
        for key in ("id", "code"):
            if not isinstance(row.get(key), str):
                raise DataError(f"{where}: field {key}: required string")
        if problems is not None and row["id"] not in problems:
            raise DataError(f"{where}: field id: no problem with id {row['id']!r}")
        out.append({"id": row["id"], "code": row["code"], "tag": row.get("tag")})
    return out


Converter = Callable[[dict, str], Problem]
