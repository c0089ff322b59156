"""Helpers of the SSH transport that need no paramiko import (they take its objects).

Kept apart so `ssh.py` stays about connecting and the mailbox contract.
"""

from __future__ import annotations

import posixpath
import stat
import time
from typing import Any

from federation.errors import TransportError

OUTPUT_POLL_SECONDS = 0.02  # how often run_remote looks for output: cheap, and low latency
READ_CHUNK_BYTES = 1 << 16  # SFTP's usual maximum packet payload


def collect_output(channel: Any, timeout: float, line: str) -> tuple[bytes, bytes]:
    """Read stdout and stderr together until the command exits (neither can fill and block)."""
    stdout, stderr = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    while True:
        progressed = False
        while channel.recv_ready():
            stdout += channel.recv(READ_CHUNK_BYTES)
            progressed = True
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(READ_CHUNK_BYTES)
            progressed = True
        finished = channel.exit_status_ready() and (channel.eof_received or channel.closed)
        if finished and not progressed:
            return bytes(stdout), bytes(stderr)
        if time.monotonic() > deadline:
            raise TransportError(
                f"remote command {line!r} still running after {timeout:g}s; it was abandoned",
                retryable=False,
            )
        if not progressed:
            time.sleep(OUTPUT_POLL_SECONDS)


def make_directories(sftp: Any, directory: str) -> None:
    """`mkdir -p` over SFTP, tolerating a concurrent writer creating the same directory."""
    missing = []
    current = directory
    while current not in ("", "/"):
        try:
            if stat.S_ISDIR(sftp.stat(current).st_mode or 0):
                break
            raise TransportError(
                f"sftp: {current} exists and is not a directory; a key cannot also be a directory of other keys",
                retryable=False,
            )
        except FileNotFoundError:
            missing.append(current)
            current = posixpath.dirname(current)
    for path in reversed(missing):
        try:
            sftp.mkdir(path)
        except OSError:
            if not stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                raise
