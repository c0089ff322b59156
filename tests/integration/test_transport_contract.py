"""One contract for every mailbox transport: local directories, S3 (SeaweedFS), SSH (sshd).

The servers are real and run on 127.0.0.1 only, started once for this module and stopped
by their own pid. Each test gets an empty mailbox and opens separate transports for the
writer and the reader, as the coordinator and a node would.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from federation.errors import TransportError
from federation.sandbox.servers import (
    OpenSSHServer,
    SeaweedFSServer,
    mailbox_bucket,
    seaweedfs_mailboxes,
)
from federation.transport import NotFound, RetryPolicy, Transport
from federation.transport.base import NO_RETRY
from federation.transport.local import LocalTransport
from federation.transport.s3 import MIN_PART_BYTES
from federation.transport.ssh import SSHTarget, SSHTransport

pytestmark = pytest.mark.integration

MIB = 1 << 20
LARGE_BYTES = 12 * MIB  # several S3 parts (5 MiB), many SFTP packets
# S3: small multipart settings so "large" objects really go up in parts.
S3_OPTIONS = {"multipart_threshold": MIN_PART_BYTES, "part_size": MIN_PART_BYTES}
PATIENT = RetryPolicy(max_attempts=40, initial_delay=0.2, max_delay=1.0, max_elapsed=90.0)


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFSServer]:
    with seaweedfs_mailboxes(tmp_path_factory.mktemp("seaweedfs"), ["fi", "ee"]) as server:
        yield server


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSSHServer]:
    with OpenSSHServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@dataclass
class Mailbox:
    """Opens any number of transports onto one empty mailbox; closes them afterwards."""

    kind: str
    factory: Callable[[], Transport]
    opened: list[Transport]

    def open(self) -> Transport:
        transport = self.factory()
        self.opened.append(transport)
        return transport


@pytest.fixture(params=["local", "s3", "ssh"])
def mailbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mailbox]:
    kind = request.param
    factory: Callable[[], Transport]
    if kind == "local":
        factory = lambda: LocalTransport(tmp_path / "mailbox")  # noqa: E731
    elif kind == "s3":
        server: SeaweedFSServer = request.getfixturevalue("seaweedfs")
        bucket = mailbox_bucket("fi")
        factory = lambda: server.transport("coordinator", bucket, **S3_OPTIONS)  # noqa: E731
        with factory() as cleaner:  # the bucket outlives tests: start each one empty
            for key in cleaner.list():
                cleaner.delete(key)
    else:
        sshd_server: OpenSSHServer = request.getfixturevalue("sshd")
        target = sshd_server.target(str(tmp_path / "remote-mailbox"))
        factory = lambda: SSHTransport(target)  # noqa: E731
    box = Mailbox(kind, factory, [])
    yield box
    for transport in box.opened:
        transport.close()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# The contract -------------------------------------------------------------------------


def test_bytes_round_trip_and_overwrite(mailbox: Mailbox) -> None:
    writer, reader = mailbox.open(), mailbox.open()
    writer.put_bytes("inbox/t1/envelope.json", b'{"task": 1}')
    assert reader.get_bytes("inbox/t1/envelope.json") == b'{"task": 1}'
    writer.put_bytes("inbox/t1/envelope.json", b"{}")  # shorter: nothing of the old remains
    assert reader.get_bytes("inbox/t1/envelope.json") == b"{}"
    writer.put_bytes("inbox/t1/empty", b"")
    assert reader.get_bytes("inbox/t1/empty") == b""


def test_multi_megabyte_file_round_trip(mailbox: Mailbox, tmp_path: Path) -> None:
    writer, reader = mailbox.open(), mailbox.open()
    source = tmp_path / "bundle.tar"
    source.write_bytes(os.urandom(LARGE_BYTES + 4321))
    writer.put_file("inbox/t1/bundle.tar", source)

    dest = tmp_path / "downloads" / "t1" / "bundle.tar"
    reader.get_file("inbox/t1/bundle.tar", dest)
    assert digest(dest.read_bytes()) == digest(source.read_bytes())
    dest.write_bytes(b"stale")  # get_file replaces whatever was there
    reader.get_file("inbox/t1/bundle.tar", dest)
    assert dest.stat().st_size == source.stat().st_size
    assert reader.get_bytes("inbox/t1/bundle.tar") == source.read_bytes()


def test_list_by_prefix(mailbox: Mailbox) -> None:
    writer, reader = mailbox.open(), mailbox.open()
    keys = ["outbox/t1/COMPLETE", "inbox/t2/a", "inbox/t10/a", "inbox/t1/b", "inbox/t1/a"]
    for key in keys:
        writer.put_bytes(key, key.encode())
    assert reader.list() == sorted(keys)
    assert reader.list("inbox/t1/") == ["inbox/t1/a", "inbox/t1/b"]
    assert reader.list("inbox/t1") == ["inbox/t1/a", "inbox/t1/b", "inbox/t10/a"]
    assert reader.list("outbox/") == ["outbox/t1/COMPLETE"]
    assert reader.list("nothing/here/") == []


def test_exists_and_delete(mailbox: Mailbox) -> None:
    writer, reader = mailbox.open(), mailbox.open()
    assert not reader.exists("outbox/t1/result.tar")
    writer.put_bytes("outbox/t1/result.tar", b"r")
    assert reader.exists("outbox/t1/result.tar")
    assert not reader.exists("outbox/t1")  # a "directory" is not an object
    reader.delete("outbox/t1/result.tar")
    assert not writer.exists("outbox/t1/result.tar")
    reader.delete("outbox/t1/result.tar")  # deleting again is fine
    assert reader.list("outbox/") == []


def test_missing_keys_raise_not_found(mailbox: Mailbox, tmp_path: Path) -> None:
    reader = mailbox.open()
    with pytest.raises(NotFound) as raised:
        reader.get_bytes("outbox/t9/result.tar")
    assert raised.value.retryable is False
    assert "outbox/t9/result.tar" in str(raised.value)
    dest = tmp_path / "never" / "result.tar"
    with pytest.raises(NotFound):
        reader.get_file("outbox/t9/result.tar", dest)
    assert not dest.exists()


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "inbox/../../x", "inbox\\x", "inbox//x", ".upload-x", "inbox/"]
)
def test_invalid_keys_are_refused(mailbox: Mailbox, key: str, tmp_path: Path) -> None:
    transport = mailbox.open()
    source = tmp_path / "f"
    source.write_bytes(b"x")
    operations: list[Callable[[], object]] = [
        lambda: transport.put_bytes(key, b"x"),
        lambda: transport.put_file(key, source),
        lambda: transport.get_bytes(key),
        lambda: transport.get_file(key, tmp_path / "out"),
        lambda: transport.exists(key),
        lambda: transport.delete(key),
    ]
    for operation in operations:
        with pytest.raises(TransportError) as raised:
            operation()
        assert raised.value.retryable is False
        assert "invalid mailbox key" in str(raised.value)
    with pytest.raises(TransportError, match="invalid mailbox prefix"):
        transport.list("../")


def test_readers_never_see_a_partial_object(mailbox: Mailbox, tmp_path: Path) -> None:
    """While a large object is written and then overwritten, a concurrent reader sees
    nothing, the whole first version or the whole second one; listings show only the key."""
    writer, reader = mailbox.open(), mailbox.open()
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(os.urandom(LARGE_BYTES))
    second.write_bytes(os.urandom(LARGE_BYTES + MIB))
    allowed = {digest(first.read_bytes()), digest(second.read_bytes())}
    key = "outbox/t1/result.tar"
    writing_done = threading.Event()
    observed: list[str] = []
    listings: set[tuple[str, ...]] = set()

    def write() -> None:
        try:
            writer.put_file(key, first)
            writer.put_file(key, second)
        finally:
            writing_done.set()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        while not writing_done.is_set():
            listings.add(tuple(reader.list("outbox/")))
            try:
                observed.append(digest(reader.get_bytes(key)))
            except NotFound:
                observed.append("nothing")
    finally:
        thread.join()
    observed.append(digest(reader.get_bytes(key)))

    assert set(observed) <= allowed | {"nothing"}
    assert observed[-1] == digest(second.read_bytes())
    assert listings <= {(), (key,)}
    assert reader.list() == [key]


# S3 only ----------------------------------------------------------------------------


def test_s3_node_credentials_reach_only_their_own_bucket(seaweedfs: SeaweedFSServer) -> None:
    own = mailbox_bucket("fi")
    other = mailbox_bucket("ee")
    with (
        seaweedfs.transport("coordinator", other) as coordinator_on_other,
        seaweedfs.transport("node-fi", own) as node_on_own,
        seaweedfs.transport("node-fi", other, retry_policy=PATIENT) as node_on_other,
    ):
        coordinator_on_other.put_bytes("inbox/t1/envelope.json", b"for ee only")
        node_on_own.put_bytes("outbox/t1/COMPLETE", b"fi")  # its own bucket works

        attempts: list[Callable[[], object]] = [
            lambda: node_on_other.get_bytes("inbox/t1/envelope.json"),
            lambda: node_on_other.put_bytes("outbox/t1/result.tar", b"forged"),
            lambda: node_on_other.list("inbox/"),
            lambda: node_on_other.exists("inbox/t1/envelope.json"),
            lambda: node_on_other.delete("inbox/t1/envelope.json"),
        ]
        for attempt in attempts:
            with pytest.raises(TransportError) as raised:
                attempt()
            error = raised.value
            assert error.retryable is False
            assert not isinstance(error, NotFound)
            assert "denied" in str(error)
            assert f"s3://{other}/" in str(error)
            assert "\n" not in str(error)
        # nothing was changed in the other node's bucket
        assert coordinator_on_other.list() == ["inbox/t1/envelope.json"]
        coordinator_on_other.delete("inbox/t1/envelope.json")
        node_on_own.delete("outbox/t1/COMPLETE")


def test_s3_upload_survives_a_server_restart(
    seaweedfs: SeaweedFSServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SeaweedFS is stopped (by pid) after the first part of a multipart upload and started
    again on the same directory and port; the retried upload succeeds, and a reader polling
    throughout never sees a partial object."""
    bucket = mailbox_bucket("fi")
    source = tmp_path / "result.tar"
    source.write_bytes(os.urandom(4 * MIN_PART_BYTES))
    key = "outbox/restart/result.tar"
    writer = seaweedfs.transport(
        "node-fi", bucket, retry_policy=PATIENT, part_workers=1, **S3_OPTIONS
    )
    reader = seaweedfs.transport("coordinator", bucket, retry_policy=NO_RETRY)
    first_pid = seaweedfs.pid
    restarter: list[threading.Thread] = []
    real_upload_part = writer._upload_part

    def upload_part_then_restart_server(*args: object, **kwargs: object) -> str:
        etag = real_upload_part(*args, **kwargs)  # type: ignore[arg-type]
        if not restarter:
            seaweedfs.stop()  # mid-upload: one part is in, the rest are not
            restarter.append(threading.Thread(target=seaweedfs.start))
            restarter[0].start()
        return etag

    monkeypatch.setattr(writer, "_upload_part", upload_part_then_restart_server)
    done = threading.Event()
    observed: set[str] = set()

    def poll() -> None:
        while not done.is_set():
            try:
                observed.add(digest(reader.get_bytes(key)))
            except NotFound:
                observed.add("nothing")
            except TransportError:
                observed.add("server down")

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        writer.put_file(key, source)
    finally:
        done.set()
        poller.join()
        for thread in restarter:
            thread.join()
    assert restarter, "the server was never restarted mid-upload"
    assert seaweedfs.running and seaweedfs.pid != first_pid
    assert observed <= {"nothing", "server down", digest(source.read_bytes())}
    assert reader.get_bytes(key) == source.read_bytes()
    assert reader.list("outbox/restart/") == [key]
    reader.delete(key)
    writer.close()
    reader.close()


# SSH only ---------------------------------------------------------------------------


def ssh_target_with_known_hosts(sshd: OpenSSHServer, known_hosts: Path, root: Path) -> SSHTarget:
    return SSHTarget(
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        client_key_path=sshd.client_key_path,
        known_hosts_path=known_hosts,
        remote_root=str(root),
    )


def test_ssh_unknown_host_is_refused(sshd: OpenSSHServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    target = ssh_target_with_known_hosts(sshd, empty, tmp_path / "root")
    with SSHTransport(target) as transport, pytest.raises(TransportError) as raised:
        transport.list()
    message = str(raised.value)
    assert raised.value.retryable is False
    assert f"ssh 127.0.0.1:{sshd.port}: host key UNKNOWN" in message
    assert str(empty) in message and "add it to that file" in message
    assert "\n" not in message


def test_ssh_changed_host_key_is_refused(sshd: OpenSSHServer, tmp_path: Path) -> None:
    pinned = tmp_path / "known_hosts"
    pinned.write_text(sshd.known_hosts_line + "\n")
    target = ssh_target_with_known_hosts(sshd, pinned, tmp_path / "root")
    with SSHTransport(target) as transport:
        transport.put_bytes("inbox/t/x", b"ok")  # the pinned key matches

    sshd.rotate_host_key()  # same host and port, a different key
    with SSHTransport(target) as transport, pytest.raises(TransportError) as raised:
        transport.get_bytes("inbox/t/x")
    message = str(raised.value)
    assert raised.value.retryable is False
    assert f"ssh 127.0.0.1:{sshd.port}: host key CHANGED" in message
    assert f"[127.0.0.1]:{sshd.port}" in message and "confirm the new key" in message
    assert "\n" not in message

    with SSHTransport(sshd.target(str(tmp_path / "root"))) as transport:  # re-pinned
        assert transport.get_bytes("inbox/t/x") == b"ok"


def test_ssh_run_remote(sshd: OpenSSHServer, tmp_path: Path) -> None:
    with SSHTransport(sshd.target(str(tmp_path / "root"))) as transport:
        result = transport.run_remote(["echo", "two words", "it's", "$HOME", "a;b"])
        assert result == (0, "two words it's $HOME a;b\n", "")
        exit_code, stdout, stderr = transport.run_remote(
            ["sh", "-c", "echo out; echo err >&2; exit 3"]
        )
        assert (exit_code, stdout, stderr) == (3, "out\n", "err\n")
        big = transport.run_remote(
            ["sh", "-c", "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2"]
        )
        assert (len(big.stdout), len(big.stderr)) == (3_000_000, 3_000_000)


def test_servers_listen_on_loopback_only(seaweedfs: SeaweedFSServer, sshd: OpenSSHServer) -> None:
    for pid in (seaweedfs.pid, sshd.pid):
        assert pid is not None
        addresses = listening_addresses(pid)
        assert addresses, f"pid {pid} listens nowhere"
        assert addresses <= {"127.0.0.1"}, f"pid {pid} listens on {addresses}"


def listening_addresses(pid: int) -> set[str]:
    """Local addresses of the TCP sockets `pid` listens on, from /proc (no tools needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    addresses = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                hex_address = local.split(":")[0]
                addresses.add(decode_address(hex_address) if width == 8 else hex_address)
    return addresses


def decode_address(hex_address: str) -> str:
    return ".".join(str(int(hex_address[i : i + 2], 16)) for i in (6, 4, 2, 0))
