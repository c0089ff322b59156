"""LocalTransport: directory mailboxes written by temporary file + rename."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from federation.errors import TransportError
from federation.transport import LocalTransport, NotFound, Transport


@pytest.fixture()
def mailbox(tmp_path: Path) -> LocalTransport:
    return LocalTransport(tmp_path / "mailbox")


def test_is_a_transport(mailbox: LocalTransport) -> None:
    assert isinstance(mailbox, Transport)
    assert mailbox.location.startswith("file://")


def test_bytes_and_files_round_trip(mailbox: LocalTransport, tmp_path: Path) -> None:
    source = tmp_path / "bundle.tar"
    source.write_bytes(os.urandom(300_000))
    mailbox.put_file("inbox/t1/bundle.tar", source)
    mailbox.put_bytes("inbox/t1/envelope.json", b'{"a": 1}')

    assert mailbox.get_bytes("inbox/t1/envelope.json") == b'{"a": 1}'
    dest = tmp_path / "out" / "deep" / "bundle.tar"
    mailbox.get_file("inbox/t1/bundle.tar", dest)
    assert dest.read_bytes() == source.read_bytes()
    assert (tmp_path / "mailbox" / "inbox" / "t1" / "bundle.tar").is_file()


def test_overwrite_replaces_the_whole_object(mailbox: LocalTransport) -> None:
    mailbox.put_bytes("outbox/t/result.tar", b"x" * 1000)
    mailbox.put_bytes("outbox/t/result.tar", b"short")
    assert mailbox.get_bytes("outbox/t/result.tar") == b"short"


def test_list_is_sorted_prefix_matching_and_hides_in_flight_files(
    mailbox: LocalTransport,
) -> None:
    for key in ["inbox/t2/a", "inbox/t10/a", "inbox/t1/b", "inbox/t1/a", "outbox/t1/COMPLETE"]:
        mailbox.put_bytes(key, b"1")
    # an upload in progress (or one a crash left behind) and someone's dotfile
    (mailbox.root / "inbox" / "t1" / ".upload-deadbeef-c").write_bytes(b"partial")
    (mailbox.root / "inbox" / ".DS_Store").write_bytes(b"")

    assert mailbox.list("inbox/t1") == ["inbox/t1/a", "inbox/t1/b", "inbox/t10/a"]
    assert mailbox.list("inbox/t1/") == ["inbox/t1/a", "inbox/t1/b"]
    assert mailbox.list("") == [
        "inbox/t1/a",
        "inbox/t1/b",
        "inbox/t10/a",
        "inbox/t2/a",
        "outbox/t1/COMPLETE",
    ]
    assert mailbox.list("nothing/") == []
    assert LocalTransport(mailbox.root / "missing").list() == []


def test_exists_delete_and_not_found(mailbox: LocalTransport, tmp_path: Path) -> None:
    mailbox.put_bytes("inbox/t/x", b"1")
    assert mailbox.exists("inbox/t/x")
    assert not mailbox.exists("inbox/t")  # a "directory" is not an object
    mailbox.delete("inbox/t/x")
    mailbox.delete("inbox/t/x")  # idempotent
    assert not mailbox.exists("inbox/t/x")

    with pytest.raises(NotFound, match="no object 'inbox/t/x'"):
        mailbox.get_bytes("inbox/t/x")
    dest = tmp_path / "never" / "x"
    with pytest.raises(NotFound):
        mailbox.get_file("inbox/t/x", dest)
    assert not dest.exists()
    with pytest.raises(NotFound):
        mailbox.get_bytes("inbox/t")


def test_failed_write_leaves_the_old_object_and_no_temporary(
    mailbox: LocalTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox.put_bytes("outbox/t/result.tar", b"old")

    def broken_replace(source: str, destination: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(TransportError, match="No space left on device") as raised:
        mailbox.put_bytes("outbox/t/result.tar", b"new")
    monkeypatch.undo()
    assert raised.value.retryable is False
    assert mailbox.get_bytes("outbox/t/result.tar") == b"old"
    assert sorted(p.name for p in (mailbox.root / "outbox" / "t").iterdir()) == ["result.tar"]


def test_symlinks_out_of_the_root_are_refused(mailbox: LocalTransport, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    (mailbox.root).mkdir(parents=True)
    (mailbox.root / "inbox").symlink_to(outside)
    with pytest.raises(TransportError, match="outside the mailbox root"):
        mailbox.get_bytes("inbox/secret")
    with pytest.raises(TransportError, match="outside the mailbox root"):
        mailbox.put_bytes("inbox/planted", b"x")
    assert not (outside / "planted").exists()


def test_missing_source_file_is_a_final_error(mailbox: LocalTransport, tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="is not a file") as raised:
        mailbox.put_file("inbox/t/x", tmp_path / "missing")
    assert raised.value.retryable is False


def test_invalid_keys_are_refused_before_touching_the_disk(mailbox: LocalTransport) -> None:
    with pytest.raises(TransportError, match="'..' segment"):
        mailbox.put_bytes("../escape", b"x")
    with pytest.raises(TransportError, match="absolute"):
        mailbox.get_bytes("/etc/passwd")
    assert not mailbox.root.exists()


def test_context_manager_closes(tmp_path: Path) -> None:
    with LocalTransport(tmp_path) as mailbox:
        mailbox.put_bytes("k", b"v")
    assert (tmp_path / "k").read_bytes() == b"v"
