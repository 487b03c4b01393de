"""Convert a dataset with MBPP-like columns into proctor's problem format (one JSONL row a problem).

    python examples/convert_hf_dataset.py SOURCE OUT.jsonl [--adapter mbpp]

SOURCE is a hub name (``google-research-datasets/mbpp``: needs the network) or a local .jsonl / .json /
.parquet file with the same columns. MBPP's columns: ``task_id``, ``text`` (or ``prompt``), ``code``
(the reference: it names the entry point, it is not copied), ``test_list`` (asserts),
``test_setup_code`` (optional). The first assert is shown in the prompt and is the public test (its
failure is the feedback); all asserts are the private tests. Other schemas: ``--adapter codecontests |
apps | livecodebench``. Train on the result with ``proctor train data.train=OUT.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from proctor.problems import DataError
from proctor.problems.adapters import ADAPTERS
from proctor.problems.load import load_adapted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="a hub dataset name or a local .jsonl / .json / .parquet file")
    ap.add_argument("out", type=Path, help="the JSONL file to write")
    ap.add_argument("--adapter", default="mbpp", choices=sorted(ADAPTERS), help="the source's schema")
    args = ap.parse_args(argv)
    try:
        problems = load_adapted(args.adapter, args.source)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for p in problems:
            f.write(json.dumps(p.model_dump()) + "\n")
    print(f"{len(problems)} problems from {args.source} ({args.adapter}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
