"""The hash-chained audit log: every edit, deletion and truncation is found and named by index."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from federation.audit import (
    GENESIS,
    AuditHead,
    append_event,
    head_path,
    read_anchors,
    read_head,
    record_hash,
    verify_log,
)
from federation.jsonio import canonical_json


def _log(tmp_path: Path, records: int = 5) -> Path:
    log = tmp_path / "audit.jsonl"
    for index in range(records):
        append_event(log, "release_written", node_id="fi", file=f"a{index}.tsv.gz", rows=index)
    return log


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines()


def _write(log: Path, lines: list[str]) -> None:
    log.write_text("".join(line + "\n" for line in lines))


def test_records_are_chained(tmp_path):
    records = [json.loads(line) for line in _lines(_log(tmp_path))]
    assert [r["seq"] for r in records] == [0, 1, 2, 3, 4]
    assert records[0]["prev"] == GENESIS
    for before, after in zip(records, records[1:], strict=False):
        assert after["prev"] == before["hash"] == record_hash(before)
    assert records[2]["event"] == "release_written" and records[2]["rows"] == 2
    result = verify_log(tmp_path / "audit.jsonl")
    assert result.intact and result.records == 5 and result.head_checked
    assert "5 records, hash chain intact" in result.summary()


def test_edited_record_is_named(tmp_path):
    log = _log(tmp_path)
    lines = _lines(log)
    lines[2] = lines[2].replace('"rows":2', '"rows":7')
    _write(log, lines)
    result = verify_log(log)
    assert not result.intact and result.index == 2
    assert result.problem == "record 2: content does not match its hash (edited)"


def test_edited_and_rehashed_record_is_named_by_its_successor(tmp_path):
    log = _log(tmp_path)
    lines = _lines(log)
    record = json.loads(lines[2])
    record["rows"] = 7
    record["hash"] = record_hash(record)
    lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    _write(log, lines)
    result = verify_log(log)
    assert result.index == 2 and result.problem.startswith("record 2: edited")


def test_deleted_record_is_named(tmp_path):
    log = _log(tmp_path)
    lines = _lines(log)
    del lines[1]
    _write(log, lines)
    result = verify_log(log)
    assert result.index == 1
    assert result.problem == "record 1: seq 2, expected 1: 1 record(s) deleted before it"


def test_record_cut_mid_line_is_named(tmp_path):
    log = _log(tmp_path)
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 20])
    result = verify_log(log)
    assert result.index == 4 and "record 4: truncated" in result.problem


def test_cut_off_last_records_are_found_by_the_head(tmp_path):
    log = _log(tmp_path)
    _write(log, _lines(log)[:3])
    result = verify_log(log)
    assert result.index == 3
    assert result.problem == "record 3: missing: 5 records were written, 3 remain (truncated)"


def test_last_record_edited_and_rehashed_differs_from_head(tmp_path):
    log = _log(tmp_path)
    lines = _lines(log)
    record = json.loads(lines[-1])
    record["rows"] = 99
    record["hash"] = record_hash(record)
    lines[-1] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    _write(log, lines)
    assert verify_log(log).index == 4


def test_a_deleted_head_with_a_cut_tail_is_caught(tmp_path):
    log = _log(tmp_path)
    head_path(log).unlink()
    _write(log, _lines(log)[:3])  # the tail cut as well: the chain alone looks fine
    result = verify_log(log)
    assert not result.intact and "head file audit.jsonl.head: missing" in result.problem
    assert "\n" not in result.summary()


def test_an_empty_log_without_head_is_intact(tmp_path):
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"")
    assert verify_log(log).intact


def test_a_record_with_a_duplicate_key_does_not_verify(tmp_path):
    log = _log(tmp_path, 3)
    lines = _lines(log)
    # Same hash input for a parser that keeps the first copy; another reader keeps the last.
    lines[1] = lines[1][:-1] + ',"rows":99}'
    _write(log, lines)
    result = verify_log(log)
    assert not result.intact and result.index == 1 and "duplicate key" in result.problem


def _forge(log: Path, keep: int, fake_rows: int) -> None:
    """Rewrite the chain from record `keep` on with other content, re-hashed, head included:
    what someone who can write both files could do."""
    lines = _lines(log)[:keep]
    _write(log, lines)
    head_path(log).write_text(
        json.dumps({"records": keep, "last_hash": json.loads(lines[-1])["hash"]})
    )
    for index in range(fake_rows):
        append_event(log, "release_written", node_id="fi", file="forged", rows=index)


def test_an_outside_anchor_catches_a_rewritten_chain(tmp_path):
    log = _log(tmp_path, 6)
    anchor = read_head(log)
    assert anchor == AuditHead(6, json.loads(_lines(log)[-1])["hash"])
    append_event(log, "later", node_id="fi")
    assert verify_log(log, [anchor]).intact and verify_log(log, [anchor]).anchors_checked == 1
    _forge(log, 3, 4)  # 7 records again, consistent chain and head
    assert verify_log(log).intact  # without the anchor the forgery is invisible
    result = verify_log(log, [anchor])
    assert not result.intact and "record 5: does not match the outside anchor" in result.problem
    _write(log, _lines(log)[:2])
    head_path(log).unlink()
    assert "an outside anchor says 6 records" in verify_log(log, [anchor]).problem


def test_anchors_are_read_from_the_coordinators_file_and_checked(tmp_path):
    good = {"records": 3, "last_hash": "a" * 64}
    path = tmp_path / "fi.jsonl"
    path.write_bytes(canonical_json({"node_id": "fi", "audit_head": good}) + b"\n")
    assert read_anchors(path) == [AuditHead(3, "a" * 64)]
    for bad in ({"records": 0, "last_hash": "a" * 64}, {"records": 3, "last_hash": "A" * 64}):
        path.write_bytes(canonical_json({"audit_head": bad}))
        with pytest.raises(ValueError, match="line 1"):
            read_anchors(path)


def test_appending_after_damage_keeps_the_damage_visible(tmp_path):
    log = _log(tmp_path, 3)
    lines = _lines(log)
    lines[1] = lines[1][:-5]  # not JSON any more
    _write(log, lines)
    append_event(log, "later")
    assert verify_log(log).index == 1
    assert json.loads(_lines(log)[-1])["seq"] == 3


def _append_many(args: tuple[str, int]) -> None:
    path, worker = args
    for index in range(25):
        append_event(Path(path), "step", worker=worker, index=index)


def test_concurrent_writers_keep_one_chain(tmp_path):
    log = tmp_path / "audit.jsonl"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_append_many, [(str(log), worker) for worker in range(4)])
    result = verify_log(log)
    assert result.intact and result.records == 100


@pytest.mark.parametrize("field", ["seq", "prev", "hash"])
def test_record_without_chain_fields_is_named(tmp_path, field):
    log = _log(tmp_path, 2)
    lines = _lines(log)
    record = json.loads(lines[0])
    del record[field]
    lines[0] = json.dumps(record)
    _write(log, lines)
    assert verify_log(log).index == 0
