#!/usr/bin/env bash
# mypy over the `proctor` namespace (settings: [tool.mypy] in pyproject.toml). mypy cannot follow the
# installed package's directory mapping, so it reads a tree of links to this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
ns=$(mktemp -d)
trap 'rm -rf "$ns"' EXIT
.venv/bin/python scripts/link_namespace.py "$ns"
MYPYPATH="$ns" .venv/bin/mypy --config-file pyproject.toml --cache-dir .mypy_cache -p proctor
