"""Append-only, hash-chained audit logs (JSON lines) at the node and at the coordinator.

The node's log records every release decision and its reasons; it stays on the node. It may
name rules and thresholds; it never holds sample IDs or per-sample values.

Each record carries ``seq`` (its index), ``prev`` (the ``hash`` of the record before it; 64
zeros for the first) and ``hash`` (SHA-256 of the record's canonical JSON without ``hash``).
Editing a record breaks its own hash, or, if the editor re-hashed it, the next record's
``prev``; deleting one breaks ``seq``; a cut in the middle of a line is not valid JSON; a
record with a duplicate key is refused (two parsers could read two different records). A
chain alone cannot notice records cut off at the end, so every append also rewrites
``<log>.head`` (count and last hash); `verify_log` compares the two and fails when the head
is missing.

Someone who can rewrite both files can forge a consistent history, so the head is also kept
outside: a node signs its head (`AuditHead`) into every result marker, the coordinator keeps
each one (`ANCHORS_DIR`), and `verify_log(..., anchors)` checks that the log still has, at each
anchored count, the anchored hash. A rewritten chain cannot match an anchor it did not sign.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from federation.files import atomic_write
from federation.jsonio import canonical_json, jsonable, parse_json_strictly

GENESIS = "0" * 64  # `prev` of the first record
HEAD_SUFFIX = ".head"
TAIL_BLOCK = 64 * 1024  # records are small; the last one is found within a block or two
CHAIN_FIELDS = ("seq", "prev", "hash")
HEAD_FIELDS = frozenset({"records", "last_hash"})
ANCHORS_DIR = "audit-anchors"  # under the coordinator's state dir: <node_id>.jsonl
HASH_HEX = 64


@dataclass(frozen=True)
class AuditHead:
    """Where a log stood: how many records, and the hash of the last one."""

    records: int
    last_hash: str

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "last_hash": self.last_hash}

    @classmethod
    def from_dict(cls, value: Any, what: str) -> AuditHead:
        """A head from a parsed document; ValueError naming `what` if it is not one."""
        if not isinstance(value, dict) or set(value) != HEAD_FIELDS:
            raise ValueError(f"{what}: an audit head has exactly {sorted(HEAD_FIELDS)}")
        records, last_hash = value["records"], value["last_hash"]
        if not isinstance(records, int) or isinstance(records, bool) or records < 1:
            raise ValueError(f"{what}: records {records!r} is not a positive integer")
        if (
            not isinstance(last_hash, str)
            or len(last_hash) != HASH_HEX
            or any(c not in "0123456789abcdef" for c in last_hash)
        ):
            raise ValueError(f"{what}: last_hash is not {HASH_HEX} lowercase hex digits")
        return cls(records, last_hash)


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of `record` without its own ``hash`` field."""
    return hashlib.sha256(
        canonical_json({k: v for k, v in record.items() if k != "hash"})
    ).hexdigest()


def head_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + HEAD_SUFFIX)


@contextmanager
def _locked(log_path: Path) -> Iterator[int]:
    """The log opened for append under an exclusive lock: concurrent steps take turns, so two
    writers never link to the same predecessor."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield descriptor
    finally:
        os.close(descriptor)  # closing releases the lock


def _last_line(descriptor: int) -> bytes | None:
    size = os.fstat(descriptor).st_size
    if size == 0:
        return None
    end = size
    tail = b""
    while end > 0:
        start = max(0, end - TAIL_BLOCK)
        tail = os.pread(descriptor, end - start, start) + tail
        end = start
        body = tail[:-1] if tail.endswith(b"\n") else tail
        if b"\n" in body or end == 0:
            return body.rsplit(b"\n", 1)[-1]
    return tail


def _count_lines(descriptor: int) -> int:
    count, offset = 0, 0
    while block := os.pread(descriptor, 1 << 20, offset):
        count += block.count(b"\n")
        offset += len(block)
    return count


def _link(descriptor: int) -> tuple[int, str]:
    """(seq, prev) for the next record."""
    last = _last_line(descriptor)
    if last is None:
        return 0, GENESIS
    try:
        record = parse_json_strictly(last)
        return int(record["seq"]) + 1, str(record["hash"])
    except (ValueError, KeyError, TypeError):
        # A damaged or pre-chain last line: link to its raw bytes and keep counting lines, so
        # the damage stays visible to `verify_log` at its own index.
        return _count_lines(descriptor), hashlib.sha256(last).hexdigest()


def append_event(log_path: Path, event: str, **fields: Any) -> None:
    """Append one record `{time, event, **fields}`, chained to the one before it."""
    # Plain JSON only (paths and other objects as text): what is hashed is what is written.
    record: dict[str, Any] = jsonable(
        {"time": datetime.now(UTC).isoformat(timespec="seconds"), "event": event, **fields}
    )
    with _locked(log_path) as descriptor:
        record["seq"], record["prev"] = _link(descriptor)
        record["hash"] = record_hash(record)
        # One write of a whole line with O_APPEND, under the lock: records never interleave.
        os.write(descriptor, canonical_json(record) + b"\n")
        head = head_path(log_path)
        atomic_write(head, json.dumps(AuditHead(record["seq"] + 1, record["hash"]).as_dict()))


def read_head(log_path: Path) -> AuditHead | None:
    """The log's current head (None: nothing written yet); ValueError if the head is damaged."""
    head = head_path(log_path)
    if not head.exists():
        return None
    return AuditHead.from_dict(parse_json_strictly(head.read_bytes()), f"head file {head.name}")


@dataclass(frozen=True)
class AuditVerification:
    path: Path
    records: int
    problem: str | None = None  # one line naming the record's index; None when intact
    index: int | None = None
    head_checked: bool = False

    @property
    def intact(self) -> bool:
        return self.problem is None

    anchors_checked: int = 0

    def summary(self) -> str:
        if self.problem:
            return f"{self.path}: {self.problem}"
        tail = "head matches" if self.head_checked else "empty log"
        if self.anchors_checked:
            tail += f", {self.anchors_checked} outside anchors match"
        return f"{self.path}: {self.records} records, hash chain intact ({tail})"


def _check_record(index: int, line: bytes, prev: str) -> tuple[str | None, int, str]:
    """(problem or None, the index it names, this record's hash) for line `index`."""
    try:
        record = parse_json_strictly(line)
    except ValueError as error:
        return f"record {index}: not valid JSON ({str(error)[:60]}; edited or truncated)", index, ""
    if not isinstance(record, dict) or any(name not in record for name in CHAIN_FIELDS):
        return f"record {index}: no seq/prev/hash (edited, or written without the chain)", index, ""
    seq = record["seq"]
    if seq != index:
        if isinstance(seq, int) and seq > index:
            deleted = seq - index
            return (
                f"record {index}: seq {seq}, expected {index}: {deleted} record(s) deleted before it",
                index,
                "",
            )
        return (
            f"record {index}: seq {seq!r}, expected {index} (duplicated, reordered or edited)",
            index,
            "",
        )
    if record_hash(record) != record["hash"]:
        return f"record {index}: content does not match its hash (edited)", index, ""
    if record["prev"] != prev:
        # The record before was changed and re-hashed: its successor still names the old hash.
        return f"record {index - 1}: edited (record {index} links to another hash)", index - 1, ""
    return None, index, str(record["hash"])


def verify_log(log_path: Path, anchors: Sequence[AuditHead] = ()) -> AuditVerification:
    """Check every record's hash, link and index, the end of the log against its head (which
    must exist once anything was written), and each outside `anchor`: the record at its count
    must carry its hash."""
    data = log_path.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # a final piece without "\n" is a cut-off record
    prev = GENESIS
    hashes: list[str] = []
    for index, line in enumerate(complete):
        problem, named, prev = _check_record(index, line, prev)
        if problem:
            return AuditVerification(log_path, index, problem, named)
        hashes.append(prev)
    if lines[-1]:
        index = len(complete)
        return AuditVerification(
            log_path, index, f"record {index}: truncated (no end of line)", index
        )
    count = len(complete)
    head = head_path(log_path)
    anchor_problem = _check_anchors(hashes, anchors)
    if not head.exists():
        if count == 0 and not anchors:
            return AuditVerification(log_path, 0)
        problem = anchor_problem or (
            f"head file {head.name}: missing; records cut off at the end cannot be ruled out "
            "(restore it, or check against the coordinator's anchors with --anchor)"
        )
        return AuditVerification(log_path, count, problem, count)
    try:
        expected = read_head(log_path)
        assert expected is not None
        written, last_hash = expected.records, expected.last_hash
    except ValueError as error:
        return AuditVerification(log_path, count, f"{str(error)[:120]} (unreadable)", count)
    if count < written:
        problem = (
            f"record {count}: missing: {written} records were written, {count} remain (truncated)"
        )
        return AuditVerification(log_path, count, problem, count)
    if count > written or prev != last_hash:
        index = written - 1 if count > written else count - 1
        problem = f"record {index}: differs from the head written with it (edited or appended behind the lock)"
        return AuditVerification(log_path, count, problem, index)
    if anchor_problem:
        return AuditVerification(log_path, count, anchor_problem, count)
    return AuditVerification(log_path, count, head_checked=True, anchors_checked=len(anchors))


def _check_anchors(hashes: list[str], anchors: Sequence[AuditHead]) -> str | None:
    for anchor in sorted(anchors, key=lambda a: a.records):
        index = anchor.records - 1
        if index >= len(hashes):
            return (
                f"record {len(hashes)}: missing; an outside anchor says {anchor.records} records "
                "were written (truncated or rewritten)"
            )
        if hashes[index] != anchor.last_hash:
            return (
                f"record {index}: does not match the outside anchor signed at {anchor.records} "
                "records (the chain was rewritten)"
            )
    return None


def read_anchors(path: Path) -> list[AuditHead]:
    """Audit heads from a coordinator's anchors file (JSON lines, each with `audit_head`) or
    a single head document; ValueError naming the line otherwise."""
    heads = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        document = parse_json_strictly(line)
        value = document.get("audit_head", document) if isinstance(document, dict) else None
        heads.append(AuditHead.from_dict(value, f"anchors '{path.name}' line {number}"))
    return heads
