"""Where checkpoints and the saved policy go: ``run.storage``, a local path or a filesystem URI.

A location is a string: ``/abs/path`` (or ``file:///abs/path``) on the local disk, or a URI of one of
pyarrow's filesystems (``s3://bucket/prefix``, ``gs://bucket/prefix``, ``hdfs://host/path``; S3 options
such as ``?endpoint_override=host:port&scheme=http`` go in the query), as Ray Train's
``storage_path`` takes one. Every learner rank writes its own part of a checkpoint there, from
whatever node it runs on, and the driver reads the same location: on nodes that share no disk the
location must be one that every node reaches (a bucket, or a path on a shared mount), and
``Storage.probe`` / ``Storage.sees`` check that before the first rollout.

Files are written to and read from a local directory: the location itself when it is local, else a
temporary staging directory uploaded afterwards (``writing``) or downloaded first (``reading``).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

PROBE = ".proctor-storage-probe"


class StorageError(RuntimeError):
    pass


def _is_uri(location: str) -> bool:
    return "://" in location.split("?", 1)[0]


class Storage:
    def __init__(self, location: str | Path):
        from pyarrow import fs

        self.location = str(location)
        try:
            if _is_uri(self.location):
                self.fs, self.root = fs.FileSystem.from_uri(self.location)
            else:
                self.fs, self.root = fs.LocalFileSystem(), str(Path(self.location).expanduser().absolute())
        except Exception as e:  # pyarrow's ArrowInvalid / OSError name the scheme, not the key
            raise StorageError(f"run.storage={self.location!r}: not a usable path or filesystem URI ({e})") from None
        self.local = isinstance(self.fs, fs.LocalFileSystem)

    def child(self, name: str) -> str:
        """The location of ``name`` under this one (a string to hand to another process or node)."""
        if not _is_uri(self.location):
            return str(Path(self.root) / name)
        base, _, query = self.location.partition("?")
        return f"{base.rstrip('/')}/{name}" + (f"?{query}" if query else "")

    def _path(self, name: str = "") -> str:
        return f"{self.root.rstrip('/')}/{name}" if name else self.root

    def exists(self, name: str = "") -> bool:
        from pyarrow import fs

        return self.fs.get_file_info(self._path(name)).type != fs.FileType.NotFound

    def read_text(self, name: str) -> str:
        with self.fs.open_input_stream(self._path(name)) as f:
            return f.read().decode()

    def write_text(self, name: str, text: str) -> None:
        self.fs.create_dir(self._path(str(Path(name).parent)) if Path(name).parent != Path(".") else self.root)
        with self.fs.open_output_stream(self._path(name)) as f:
            f.write(text.encode())

    @contextlib.contextmanager
    def writing(self) -> Iterator[Path]:
        """A local directory whose files end up at this location when the block ends without error."""
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            yield Path(self.root)
            return
        from pyarrow import fs

        stage = Path(tempfile.mkdtemp(prefix="proctor-upload-"))
        try:
            yield stage
            self.fs.create_dir(self.root)
            fs.copy_files(str(stage), self.root, source_filesystem=fs.LocalFileSystem(), destination_filesystem=self.fs)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    @contextlib.contextmanager
    def reading(self) -> Iterator[Path]:
        """A local directory holding this location's files for the block's duration."""
        if self.local:
            yield Path(self.root)
            return
        from pyarrow import fs

        stage = Path(tempfile.mkdtemp(prefix="proctor-download-"))
        try:
            fs.copy_files(self.root, str(stage), source_filesystem=self.fs, destination_filesystem=fs.LocalFileSystem())
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def remove_except(self, sub: str, keep: Callable[[str], bool]) -> None:
        """Delete the entries directly under ``sub`` whose base name ``keep`` rejects."""
        from pyarrow import fs

        try:
            entries = self.fs.get_file_info(fs.FileSelector(self._path(sub), allow_not_found=True))
        except FileNotFoundError:
            return
        for e in entries:
            if keep(e.base_name):
                continue
            if e.type == fs.FileType.Directory:
                self.fs.delete_dir(e.path)
            else:
                self.fs.delete_file(e.path)

    # --- checks before a run ---------------------------------------------------------------------------

    def probe(self) -> str:
        """Write a probe file with a fresh token and read it back; returns the token. Raises
        ``StorageError`` naming the location when it cannot be written."""
        token = uuid.uuid4().hex
        try:
            self.write_text(PROBE, token)
            if self.read_text(PROBE) != token:
                raise OSError("the probe read back differs from what was written")
        except Exception as e:
            raise StorageError(f"run.storage={self.location!r} cannot be written: {type(e).__name__}: {e}") from None
        return token

    def clear_probe(self) -> None:
        self.fs.delete_file(self._path(PROBE))

    def sees(self, token: str) -> bool:
        """Whether this process reads the probe ``token`` another process wrote (the same storage)."""
        try:
            return self.read_text(PROBE) == token
        except Exception:
            return False
