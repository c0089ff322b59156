"""Mailboxes as plain directories: the demo default, and a node and coordinator on one host.

Atomicity comes from POSIX rename: every write goes to a dot-named temporary file in the
final file's own directory (same filesystem) and is then `os.replace`d over the final
name. The data is fsynced before the rename and the directory after it, so a crash leaves
either the old object or the new one, never a torn file under the final name.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

from federation.errors import TransportError
from federation.files import atomic_path, fsync_directory
from federation.transport.base import (
    ClosingTransport,
    NotFound,
    in_flight_name,
    validate_key,
    validate_prefix,
)

T = TypeVar("T")
COPY_CHUNK_BYTES = 1 << 20  # 1 MiB: large enough for throughput, small enough for memory


def atomic_destination(final: Path) -> AbstractContextManager[Path]:
    """A temporary path beside `final` under an in-flight name (never listed as a key); on
    success it is fsynced and renamed into place, on any error removed."""
    return atomic_path(final, temporary=final.parent / in_flight_name(final.name, uuid.uuid4().hex))


def copy_file_atomically(source: Path, final: Path) -> None:
    with atomic_destination(final) as temporary:
        shutil.copyfile(source, temporary)


class LocalTransport(ClosingTransport):
    """A mailbox rooted at a local directory that exists (its subfolders are made on write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    @property
    def location(self) -> str:
        return f"file://{self.root}"

    def __repr__(self) -> str:
        return f"LocalTransport({str(self.root)!r})"

    # Paths ---------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        """The file for `key`, refusing symlinks that would lead outside the mailbox root."""
        path = self.root / validate_key(key)
        resolved_root = self.root.resolve()
        if not path.resolve().is_relative_to(resolved_root):
            raise TransportError(
                f"{self.location}: key {key!r} resolves outside the mailbox root (a symlink?); remove the link",
                retryable=False,
            )
        return path

    def _run(self, action: str, key: str, operation: Callable[[], T]) -> T:
        """Map OS errors to TransportError: a missing file is NotFound, the rest is final.

        Local disks do not have transient faults worth retrying: a full disk or a
        permission problem needs an operator, so these are not retryable.
        """
        try:
            return operation()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
            raise NotFound(f"{self.location}: no object {key!r} ({action})") from error
        except OSError as error:
            raise TransportError(
                f"{self.location}: {action} {key!r} failed: {error.strerror or error}; check the directory's permissions and free space",
                retryable=False,
            ) from error

    # Writing -------------------------------------------------------------------------------

    def put_file(self, key: str, source: Path) -> None:
        final = self._path(key)
        source = Path(source)
        if not source.is_file():
            raise TransportError(f"put {key!r}: source {source} is not a file", retryable=False)

        def write() -> None:
            copy_file_atomically(source, final)

        try:
            self._run("put", key, write)
        except NotFound as error:  # here a missing file is the source vanishing, not the key
            raise TransportError(f"put {key!r}: {error}", retryable=False) from error

    def put_bytes(self, key: str, data: bytes) -> None:
        final = self._path(key)

        def write() -> None:
            with atomic_destination(final) as temporary:
                temporary.write_bytes(data)

        self._run("put", key, write)

    def delete(self, key: str) -> None:
        path = self._path(key)

        def remove() -> None:
            if path.is_file():
                path.unlink(missing_ok=True)
                fsync_directory(path.parent)

        self._run("delete", key, remove)

    def check(self) -> None:
        if not self.root.is_dir():
            raise TransportError(
                f"{self.location}: mailbox directory does not exist; create it (mkdir -p) or fix "
                "the mailbox 'path'",
                retryable=False,
            )

    # Reading -------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        return self._run("get", key, path.read_bytes)

    def get_file(self, key: str, dest: Path) -> None:
        path = self._path(key)
        dest = Path(dest)

        def copy() -> None:
            # Copy from the file we opened, not the name: a concurrent overwrite of the key
            # replaces the name, while our open file keeps the version we started with.
            with (
                open(path, "rb") as opened,
                atomic_destination(dest) as temporary,
                open(temporary, "wb") as out,
            ):
                shutil.copyfileobj(opened, out, COPY_CHUNK_BYTES)

        self._run("get", key, copy)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        # Only walk the deepest directory the prefix names; S3-style string matching after.
        directory = self.root / prefix.rpartition("/")[0]
        if not directory.is_dir():
            return []
        keys = []
        for current, subdirectories, files in os.walk(directory):
            subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
            relative = Path(current).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith("."):  # in-flight uploads and foreign dotfiles
                    continue
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)
