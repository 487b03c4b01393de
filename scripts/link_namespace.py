"""Make the ``proctor`` namespace as a tree of links to this checkout's directories, for tools that
cannot use the installed package's mapping (mypy; a machine where proctor is not installed):

    python scripts/link_namespace.py DIR      # DIR/proctor/cluster -> ./cluster, ... (pyproject's package-dir)

then put DIR on MYPYPATH or PYTHONPATH. Standard library only."""

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    ns = Path(argv[0]) / "proctor"
    ns.mkdir(parents=True, exist_ok=True)
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, directory in mapping.items():
        link = ns / package.removeprefix("proctor.")
        if not link.is_symlink():
            link.symlink_to(ROOT / directory, target_is_directory=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
