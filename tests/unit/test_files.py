"""federation.files: atomic writes that leave the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from federation.files import REPO_ROOT, atomic_path, atomic_write, atomic_write_json, sha256_file


def test_repo_root_is_the_checkout_with_the_pipeline():
    assert (REPO_ROOT / "Snakefile").is_file() and (REPO_ROOT / "config" / "schema").is_dir()


def test_atomic_write_replaces_a_file_and_leaves_no_temporary(tmp_path: Path):
    target = tmp_path / "deep" / "result.json"
    atomic_write(target, "old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert [path.name for path in target.parent.iterdir()] == ["result.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path):
    target = tmp_path / "table.tsv"
    atomic_write(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a tab")
        raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["table.tsv"]


def test_a_secret_is_written_with_its_mode_from_the_first_byte(tmp_path: Path):
    target = tmp_path / "secret.yaml"
    seen_modes = []
    with atomic_path(target, mode=0o600) as tmp:
        seen_modes.append(stat.S_IMODE(tmp.stat().st_mode))
        tmp.write_text("access_key: x")
    assert seen_modes == [0o600]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_temporary_names_keep_the_extension_and_differ_per_writer(tmp_path: Path):
    target = tmp_path / "table.tsv.bgz"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        assert first.name.startswith(".partial-") and first.name.endswith("table.tsv.bgz")
        first.write_text("a")
        second.write_text("b")
    assert target.read_text() == "a"  # the outer writer renamed last


def test_json_files_are_sorted_indented_and_end_in_a_newline(tmp_path: Path):
    path = atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [2]})
    assert path.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'


def test_sha256_file_streams_the_whole_file(tmp_path: Path):
    data = b"x" * (3 << 20)  # more than one read block
    path = tmp_path / "big"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
