"""Problem sources by name (see the package docstring): bundled, humaneval, mbpp397, adapters, files."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from proctor.problems.adapters import ADAPTERS, HUB_NAMES
from proctor.problems.files import DataError, line_numbers, load_native, rows_from_file, where
from proctor.problems.format import Problem, ProblemError
from proctor.problems.humaneval import load_humaneval
from proctor.problems.mbpp397 import load_mbpp397

BUNDLED_DIR = Path(str(resources.files("proctor.problems"))) / "bundled"  # package data
BUNDLED = {"bundled": "train.jsonl", "warmup": "warmup.jsonl"}  # name -> file; solutions beside each


def load_adapted(adapter: str, source: str) -> list[Problem]:
    convert, id_key, hub_split = ADAPTERS[adapter]
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")):
        rows, lines, where_src = rows_from_file(path), line_numbers(path), path
    else:
        rows, lines, where_src = _rows_from_hub(source, hub_split), [], Path(source)
    problems = []
    for i, row in enumerate(rows):
        place = where(where_src, i, lines, row, id_key)
        try:
            problems.append(convert(row, place))
        except ProblemError as e:
            raise DataError(str(e)) from None
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{place}: not a {adapter} row: {type(e).__name__}: {e}") from None
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
    if spec in BUNDLED:
        problems = load_native(BUNDLED_DIR / BUNDLED[spec])
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
    lines = line_numbers(path)
    for i, row in enumerate(rows_from_file(path)):
        place = where(path, i, lines, row)
        for key in ("id", "code"):
            if not isinstance(row.get(key), str):
                raise DataError(f"{place}: field {key}: required string")
        if problems is not None and row["id"] not in problems:
            raise DataError(f"{place}: field id: no problem with id {row['id']!r}")
        out.append({"id": row["id"], "code": row["code"], "tag": row.get("tag")})
    return out

