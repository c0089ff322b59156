"""Files: where the repository is, atomic writes, and streamed SHA-256 digests.

Every writer in the project goes through `atomic_write` (or `atomic_path` when another library
writes the bytes): the data goes to a temporary name in the same directory, is flushed and
fsynced, and is renamed over the final name, so a reader, a crash or a power cut sees the old
file or the new one, never half of one. Temporary names start with `.partial-`, which nothing
else uses, so a leftover is recognisable and never mistaken for a result.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The checkout or installed tree holding Snakefile, rules/, workflows/ and config/schema/.
REPO_ROOT = Path(__file__).resolve().parents[1]
PARTIAL_PREFIX = ".partial-"
READ_BLOCK = 1 << 20  # 1 MiB per read: large files are never held in memory whole


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(READ_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def partial_path(path: Path) -> Path:
    """A fresh temporary sibling for a write of `path` (its own token: concurrent writers of
    one file never share it; the final name stays last, so its extension is kept)."""
    return path.with_name(f"{PARTIAL_PREFIX}{uuid.uuid4().hex[:12]}-{path.name}")


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (the directory entry itself is fsynced)."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_path(
    path: Path, mode: int | None = None, temporary: Path | None = None
) -> Iterator[Path]:
    """A temporary path to write to; on success it is fsynced and renamed to `path`.

    For writers that open the file themselves (gzip, pandas, a library). On an error the
    temporary file is removed and `path` is left as it was. `mode` (e.g. 0o600) is set before
    any byte is written, so a secret is never briefly readable by others. `temporary` (in the
    same directory) replaces the default `.partial-` name, e.g. for a mailbox's in-flight name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary or partial_path(path)
    if mode is not None:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
        os.chmod(tmp, mode)  # O_CREAT's mode is masked by the umask
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write(path: Path, data: bytes | str, mode: int | None = None) -> Path:
    """Write `data` (text is UTF-8) to `path` atomically; return `path`."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_path(path, mode) as tmp, open(tmp, "wb") as handle:
        handle.write(payload)
    return path


def atomic_write_json(path: Path, document: Any) -> Path:
    """Pretty, key-sorted JSON with a final newline, atomically (the project's JSON files)."""
    return atomic_write(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
