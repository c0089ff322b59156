"""A real SSH login host on loopback: OpenSSH's sshd with its own keys and config.

Started as ``/usr/sbin/sshd -D -e -f PRIVATE_CONFIG``: listening on 127.0.0.1 only, on a
free port, with a freshly generated ed25519 host key, one authorised ed25519 client key,
no passwords and no PAM. Everything (keys, config, pid file, log) lives in one work
directory, so nothing of the machine's own sshd setup is read or changed.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import subprocess
from pathlib import Path

from federation.sandbox.servers.processes import (
    LOOPBACK,
    STARTUP_TIMEOUT_SECONDS,
    ManagedProcess,
    ServerContext,
    free_port,
)
from federation.transport.ssh import SSHTarget

SSHD = "/usr/sbin/sshd"  # Debian's openssh-server; sshd insists on being run by full path
PRIVILEGE_SEPARATION_DIR = "/run/sshd"  # sshd running as root refuses to start without it

SSHD_CONFIG = """\
# Private sshd for federation mailboxes: loopback only, public keys only.
ListenAddress {host}
Port {port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
# The work directory is usually under /tmp, whose permissions StrictModes rejects.
StrictModes no
Subsystem sftp internal-sftp
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
PrintMotd no
LogLevel INFO
"""


def generate_ed25519_key(path: Path, comment: str) -> None:
    """Write a new passphrase-less ed25519 key pair at `path` and `path`.pub."""
    for stale in (path, public_key_path(path)):
        stale.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def public_key_path(private_key: Path) -> Path:
    return private_key.with_name(private_key.name + ".pub")


class OpenSSHServer(ServerContext):
    """`sshd -D -e` on 127.0.0.1 with its own host key and one authorised client key.

    After construction: `host`, `port`, `username`, `client_key_path`, `known_hosts_path`
    (a file pinning this server's '[127.0.0.1]:PORT' key) and `known_hosts_line`.
    `rotate_host_key()` restarts it on the same port with a new host key, as a changed or
    impersonated node would look, and rewrites `known_hosts_path` to match.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
    ) -> None:
        self.work_dir = Path(work_dir).absolute()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.port = port or free_port()
        self.username = getpass.getuser()
        self.startup_timeout = startup_timeout
        self.host_key_path = self.work_dir / "ssh_host_ed25519_key"
        self.client_key_path = self.work_dir / "client_ed25519"
        self.authorized_keys_path = self.work_dir / "authorized_keys"
        self.known_hosts_path = self.work_dir / "known_hosts"
        self.config_path = self.work_dir / "sshd_config"
        self._process = ManagedProcess("sshd", self.work_dir / "sshd.log")

        generate_ed25519_key(self.client_key_path, "federation-coordinator")
        self.authorized_keys_path.write_text(public_key_path(self.client_key_path).read_text())
        self._new_host_key()
        self.config_path.write_text(
            SSHD_CONFIG.format(
                host=self.host,
                port=self.port,
                host_key=self.host_key_path,
                pid_file=self.work_dir / "sshd.pid",
                authorized_keys=self.authorized_keys_path,
                user=self.username,
            )
        )

    @property
    def known_hosts_line(self) -> str:
        key_type, key = public_key_path(self.host_key_path).read_text().split()[:2]
        return f"[{self.host}]:{self.port} {key_type} {key}"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.running

    def target(self, remote_root: str | Path) -> SSHTarget:
        """How to reach a mailbox at `remote_root` (an absolute path) on this server."""
        return SSHTarget(
            host=self.host,
            port=self.port,
            username=self.username,
            client_key_path=self.client_key_path,
            known_hosts_path=self.known_hosts_path,
            remote_root=str(remote_root),
        )

    def _new_host_key(self) -> None:
        generate_ed25519_key(self.host_key_path, "federation-node-host")
        self.known_hosts_path.write_text(self.known_hosts_line + "\n")

    def rotate_host_key(self) -> None:
        was_running = self.running
        self.stop()
        self._new_host_key()
        if was_running:
            self.start()

    def start(self) -> None:
        if self.running:
            return
        # Not root: sshd then runs without privilege separation and does not need it.
        with contextlib.suppress(PermissionError):
            os.makedirs(PRIVILEGE_SEPARATION_DIR, mode=0o755, exist_ok=True)
        self._process.start(
            [SSHD, "-D", "-e", "-f", str(self.config_path)],
            cwd=self.work_dir,
            wait_until_ready=self._wait,
        )

    def _wait(self) -> None:
        def banner_received() -> bool:
            with socket.create_connection((self.host, self.port), timeout=1.0) as probe:
                if not probe.recv(64).startswith(b"SSH-2.0-"):
                    return False
            # A banner while our process still runs: ours, not a stranger's on the port.
            self._process.fail_if_exited()
            return True

        self._process.poll_until(
            banner_received, timeout=self.startup_timeout, what=f"sshd on {self.host}:{self.port}"
        )

    def stop(self) -> None:
        self._process.stop()
