"""SHA-256 of files, streamed: the one helper every module that digests a file uses."""

from __future__ import annotations

import hashlib
from pathlib import Path

READ_BLOCK = 1 << 20  # 1 MiB per read: large files are never held in memory whole


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(READ_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
