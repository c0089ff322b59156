"""Mailboxes on a node's login host, over SSH/SFTP with a pinned host key.

The only module that imports paramiko. The coordinator trusts exactly one host key per
node, from a known_hosts file it was given out of band (``[host]:port key-type key``);
paramiko's RejectPolicy refuses any host that is missing from that file, and a changed
key fails the connection. Never AutoAddPolicy: trusting whatever key answers first is how
a man in the middle gets the study bundles. Authentication is by client key only.

Atomicity: uploads go to a dot-named temporary file in the final directory and are then
renamed over the final name with OpenSSH's posix-rename extension (rename(2) on the
server, which replaces atomically; plain SFTP rename refuses to overwrite).
"""

from __future__ import annotations

import builtins
import contextlib
import io
import posixpath
import shlex
import stat
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, TypeVar

import paramiko

from federation.errors import TransportError
from federation.transport.base import (
    DEFAULT_RETRY_POLICY,
    ClosingTransport,
    NotFound,
    RetryPolicy,
    call_with_retry,
    in_flight_name,
    validate_key,
    validate_prefix,
)
from federation.transport.local import atomic_destination
from federation.transport.remote_io import READ_CHUNK_BYTES, collect_output, make_directories

T = TypeVar("T")
CONNECT_TIMEOUT_SECONDS = 10.0  # a login host that needs longer than this is not healthy
REMOTE_COMMAND_TIMEOUT_SECONDS = 3600.0  # `node run-once` runs a whole pipeline


@dataclass(frozen=True)
class SSHTarget:
    """How the coordinator reaches one node's login host and mailbox."""

    host: str
    port: int
    username: str
    client_key_path: Path  # ed25519 private key (OpenSSH format)
    known_hosts_path: Path  # holds the node's pinned host key
    remote_root: str  # absolute path of the mailbox directory on the node

    @property
    def host_key_name(self) -> str:
        """How known_hosts names this host: plain for port 22, '[host]:port' otherwise."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


class RemoteResult(NamedTuple):
    exit_code: int
    stdout: str
    stderr: str


class SSHTransport(ClosingTransport):
    """A node mailbox under `target.remote_root`, with `run_remote` for triggering work."""

    def __init__(self, target: SSHTarget, *, retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY):
        if not posixpath.isabs(target.remote_root):
            raise TransportError(
                f"remote_root {target.remote_root!r} must be an absolute path on the node",
                retryable=False,
            )
        self.target = target
        self.retry_policy = retry_policy
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        # One SFTP channel, one request at a time: simple and enough for a mailbox.
        self._lock = threading.RLock()

    @property
    def location(self) -> str:
        t = self.target
        return f"sftp://{t.username}@{t.host}:{t.port}{t.remote_root}"

    def __repr__(self) -> str:
        return f"SSHTransport({self.location!r})"

    # Connection ----------------------------------------------------------------------------

    def _connect(self) -> paramiko.SSHClient:
        target = self.target
        if not target.known_hosts_path.is_file():
            raise TransportError(
                f"ssh {target.host}:{target.port}: known_hosts file {target.known_hosts_path} is missing; ask the node's admin for its host key line",
                retryable=False,
            )
        client = paramiko.SSHClient()
        # Only the pinned file: the user's ~/.ssh/known_hosts is not part of the trust.
        client.load_host_keys(str(target.known_hosts_path))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                target.host,
                port=target.port,
                username=target.username,
                key_filename=str(target.client_key_path),
                look_for_keys=False,
                allow_agent=False,
                timeout=CONNECT_TIMEOUT_SECONDS,
                banner_timeout=CONNECT_TIMEOUT_SECONDS,
                auth_timeout=CONNECT_TIMEOUT_SECONDS,
            )
        except BaseException as error:
            client.close()
            raise _connect_error(target, client, error) from error
        return client

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            client = self._connect()
            try:
                self._sftp = client.open_sftp()
            except Exception:
                client.close()
                raise
            self._client = client
        return self._sftp

    def _drop_connection(self) -> None:
        with self._lock:
            if self._sftp is not None:
                self._sftp.close()
            if self._client is not None:
                self._client.close()
            self._sftp, self._client = None, None

    def close(self) -> None:
        self._drop_connection()

    def _connection_alive(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def _call(self, action: str, key: str, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        """Run an SFTP operation; reconnect and retry on connection trouble."""

        def attempt() -> T:
            with self._lock:
                try:
                    return operation(self._sftp_client())
                except TransportError:
                    raise
                except FileNotFoundError as error:
                    raise NotFound(f"{self.location}: no object {key!r} ({action})") from error
                except PermissionError as error:
                    raise TransportError(
                        f"{self.location}: {action} {key!r}: permission denied; the node's admin must let this account write the mailbox",
                        retryable=False,
                    ) from error
                except (OSError, EOFError, paramiko.SSHException) as error:
                    if self._connection_alive():
                        # The server answered with an SFTP failure status: retrying the
                        # same request would get the same answer.
                        raise TransportError(
                            f"{self.location}: {action} {key!r} failed: {error}", retryable=False
                        ) from error
                    self._drop_connection()
                    raise TransportError(
                        f"{self.location}: {action} {key!r}: connection lost: {error or type(error).__name__}"
                    ) from error

        return call_with_retry(
            attempt, what=f"{action} {self.location}/{key}", policy=self.retry_policy
        )

    def _remote_path(self, key: str) -> str:
        return posixpath.join(self.target.remote_root, validate_key(key))

    # Writing -------------------------------------------------------------------------------

    def _upload(self, key: str, write: Callable[[paramiko.SFTPClient, str], Any]) -> None:
        final = self._remote_path(key)
        directory, name = posixpath.split(final)

        def upload(sftp: paramiko.SFTPClient) -> None:
            make_directories(sftp, directory)
            temporary = posixpath.join(directory, in_flight_name(name, uuid.uuid4().hex))
            try:
                write(sftp, temporary)
                sftp.posix_rename(temporary, final)
            except BaseException:
                # Gone already, or the connection is: either way the dot-name is never listed.
                with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                    sftp.remove(temporary)
                raise

        self._call("put", key, upload)

    def put_file(self, key: str, source: Path) -> None:
        source = Path(source)
        if not source.is_file():
            raise TransportError(f"put {key!r}: source {source} is not a file", retryable=False)
        self._upload(key, lambda sftp, temporary: sftp.put(str(source), temporary, confirm=True))

    def put_bytes(self, key: str, data: bytes) -> None:
        def write(sftp: paramiko.SFTPClient, temporary: str) -> None:
            with sftp.open(temporary, "wb") as remote:
                remote.set_pipelined(True)
                remote.write(data)

        self._upload(key, write)

    def delete(self, key: str) -> None:
        path = self._remote_path(key)

        def remove(sftp: paramiko.SFTPClient) -> None:
            with contextlib.suppress(FileNotFoundError):  # idempotent, like S3
                sftp.remove(path)

        self._call("delete", key, remove)

    # Reading -------------------------------------------------------------------------------

    def _download(self, key: str, out: BinaryIO) -> None:
        path = self._remote_path(key)

        def copy(sftp: paramiko.SFTPClient) -> None:
            out.seek(0)  # a retry starts over
            out.truncate()
            # One open handle reads one version, even if the key is replaced meanwhile.
            with sftp.open(path, "rb") as remote:
                size = remote.stat().st_size
                if size:  # fetch all blocks at once instead of one round trip per read
                    remote.prefetch(size)
                while chunk := remote.read(READ_CHUNK_BYTES):
                    out.write(chunk)

        self._call("get", key, copy)

    def get_bytes(self, key: str) -> bytes:
        buffer = io.BytesIO()
        self._download(key, buffer)
        return buffer.getvalue()

    def get_file(self, key: str, dest: Path) -> None:
        validate_key(key)  # before `dest` is touched
        with atomic_destination(Path(dest)) as temporary, open(temporary, "wb") as out:
            self._download(key, out)

    def exists(self, key: str) -> bool:
        path = self._remote_path(key)

        def is_file(sftp: paramiko.SFTPClient) -> bool:
            try:
                mode = sftp.stat(path).st_mode
            except FileNotFoundError:
                return False
            return mode is not None and stat.S_ISREG(mode)

        return self._call("stat", key, is_file)

    def check(self) -> None:
        """The login host answers with the pinned key and the mailbox directory exists."""
        root = self.target.remote_root

        def is_directory(sftp: paramiko.SFTPClient) -> None:
            try:
                mode = sftp.stat(root).st_mode
            except FileNotFoundError:
                mode = None
            if mode is None or not stat.S_ISDIR(mode):
                raise TransportError(
                    f"{self.location}: mailbox directory '{root}' does not exist on the host; "
                    "create it or fix 'remote_root'",
                    retryable=False,
                )

        self._call("check", "", is_directory)

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        root = self.target.remote_root
        start = prefix.rpartition("/")[0]

        def walk(sftp: paramiko.SFTPClient) -> list[str]:
            keys: list[str] = []
            pending = [start]
            while pending:
                relative = pending.pop()
                try:
                    entries = sftp.listdir_attr(posixpath.join(root, relative))
                except FileNotFoundError:
                    continue
                for entry in entries:
                    if entry.filename.startswith("."):  # in-flight uploads, foreign dotfiles
                        continue
                    key = posixpath.join(relative, entry.filename) if relative else entry.filename
                    mode = entry.st_mode or 0
                    if stat.S_ISDIR(mode):
                        if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                            pending.append(key)
                    elif stat.S_ISREG(mode) and key.startswith(prefix):
                        keys.append(key)
            return sorted(keys)

        return self._call("list", prefix, walk)

    # Remote commands -----------------------------------------------------------------------

    def run_remote(
        self, command: builtins.list[str], *, timeout: float = REMOTE_COMMAND_TIMEOUT_SECONDS
    ) -> RemoteResult:
        """Run `command` on the login host (arguments quoted with shlex) and wait for it.

        Connecting is retried; the command itself is not, since it need not be idempotent.
        """
        if not command:
            raise TransportError("run_remote: empty command", retryable=False)
        line = shlex.join(command)

        def open_channel() -> paramiko.Channel:
            with self._lock:
                self._sftp_client()  # connects (with the host-key checks) if needed
                assert self._client is not None
                transport = self._client.get_transport()
                if transport is None or not transport.is_active():
                    self._drop_connection()
                    raise TransportError(f"ssh {self.location}: connection lost")
                try:
                    channel = transport.open_session(timeout=CONNECT_TIMEOUT_SECONDS)
                except (paramiko.SSHException, OSError, EOFError) as error:
                    self._drop_connection()
                    raise TransportError(f"ssh {self.location}: {error}") from error
                return channel

        channel = call_with_retry(
            open_channel, what=f"run on {self.location}", policy=self.retry_policy
        )
        try:
            channel.exec_command(line)
            stdout, stderr = collect_output(channel, timeout, line)
            exit_code = channel.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise TransportError(
                f"ssh {self.location}: running {line!r} failed: {error}", retryable=False
            ) from error
        finally:
            channel.close()
        return RemoteResult(
            exit_code, stdout.decode(errors="replace"), stderr.decode(errors="replace")
        )


def _connect_error(target: SSHTarget, client: Any, error: BaseException) -> BaseException:
    """One-line TransportError for a failed connection; host-key trouble is never retried."""
    where = f"ssh {target.host}:{target.port}"
    pinned = target.known_hosts_path
    if isinstance(error, paramiko.BadHostKeyException):
        return TransportError(
            f"{where}: host key CHANGED (server offers {error.key.get_name()} {_fingerprint(error.key)}, {pinned} pins {_fingerprint(error.expected_key)}); refusing to connect: confirm the new key with the node's admin, then replace the '{target.host_key_name}' line",
            retryable=False,
        )
    if isinstance(error, paramiko.AuthenticationException):
        return TransportError(
            f"{where}: key {target.client_key_path} was refused for user '{target.username}'; add its public key to the node's authorized_keys",
            retryable=False,
        )
    if isinstance(error, paramiko.SSHException):
        # RejectPolicy's refusal is a bare SSHException: tell it apart by the pinned file.
        if client.get_host_keys().lookup(target.host_key_name) is None:
            return TransportError(
                f"{where}: host key UNKNOWN ('{target.host_key_name}' is not in {pinned}); refusing to connect: get the node's host key line from its admin and add it to that file",
                retryable=False,
            )
        # Anything else here (no banner yet, a reset during key exchange) may pass.
        return TransportError(f"{where}: {error}")
    if isinstance(error, OSError | EOFError):
        return TransportError(f"{where}: cannot connect: {error}")
    return error


def _fingerprint(key: Any) -> str:
    return str(key.fingerprint) if hasattr(key, "fingerprint") else key.get_base64()[:16]
