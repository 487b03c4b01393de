"""The problem format: the public contract every stage and every user dataset uses.

One JSONL row per problem::

    {"id": str, "prompt": str, "kind": "assert" | "stdin_stdout", "entry_point": str | null,
     "starter_code": str | null, "public_tests": [...], "private_tests": [...],
     "time_limit_s": float, "memory_mb": int}

An ``assert`` test is ``{"code": "<python run after the solution>"}``; a ``stdin_stdout`` test is
``{"input": str, "output": str}``. Public tests are shown to the model (their failures become
feedback); private tests decide the final reward.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Kind = Literal["assert", "stdin_stdout"]


class AssertTest(BaseModel):
    """Python code run after the solution in the same interpreter; passes if it raises nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(min_length=1)


class StdioTest(BaseModel):
    """The program gets ``input`` on stdin; passes if stdout matches ``output`` (whitespace-trimmed lines)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    input: str
    output: str


TestCase = AssertTest | StdioTest


class Problem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    kind: Kind
    entry_point: str | None = None
    starter_code: str | None = None
    public_tests: list[AssertTest | StdioTest]
    private_tests: list[AssertTest | StdioTest] = Field(min_length=1)
    time_limit_s: float = Field(default=10.0, gt=0, le=600)
    memory_mb: int = Field(default=1024, ge=16, le=65536)

    @model_validator(mode="before")
    @classmethod
    def _parse_tests_by_kind(cls, data):
        # Parse tests with the model that the row's kind names, so a wrong test shape is reported
        # against that kind ("public_tests.0.output: Field required"), not as a union mismatch.
        if isinstance(data, dict) and data.get("kind") in ("assert", "stdin_stdout"):
            test_cls = AssertTest if data["kind"] == "assert" else StdioTest
            data = dict(data)
            for field in ("public_tests", "private_tests"):
                tests = data.get(field)
                if isinstance(tests, list):
                    parsed = []
                    for i, t in enumerate(tests):
                        if isinstance(t, (AssertTest, StdioTest)) and not isinstance(t, test_cls):
                            raise ValueError(f"{field}[{i}] is a {type(t).__name__}, kind is {data['kind']!r}")
                        parsed.append(t if isinstance(t, test_cls) else _parse_test(test_cls, t, f"{field}[{i}]"))
                    data[field] = parsed
        return data

    @model_validator(mode="after")
    def _check_entry_point(self):
        if self.entry_point is not None and not self.entry_point.isidentifier():
            raise ValueError(f"entry_point {self.entry_point!r} is not a Python identifier")
        return self

    @property
    def tests(self) -> list[TestCase]:
        return [*self.public_tests, *self.private_tests]


def _parse_test(test_cls, value, where: str):
    try:
        return test_cls.model_validate(value)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{where}{'.' + loc if loc else ''}: {err['msg']}") from None


class ProblemError(ValueError):
    """A row that is not a valid problem; the message names the source, row and field."""


def parse_problem(row: dict, where: str) -> Problem:
    """Validate one row; ``where`` names it in errors (e.g. ``train.jsonl line 7 (id 'two-sum')``)."""
    try:
        return Problem.model_validate(row)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "row"
            lines.append(f"field {loc}: {err['msg']}")
        raise ProblemError(f"{where}: " + "; ".join(lines)) from None
