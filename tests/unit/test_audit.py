"""The hash-chained audit log: every edit, deletion and truncation is found and named by index."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from federation.audit import GENESIS, append_event, head_path, record_hash, verify_log


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


def test_without_head_the_chain_is_still_checked(tmp_path):
    log = _log(tmp_path)
    head_path(log).unlink()
    result = verify_log(log)
    assert result.intact and not result.head_checked and "not checked" in result.summary()


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
