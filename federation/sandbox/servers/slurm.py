"""A real one-node Slurm cluster on loopback: munged, slurmctld and slurmd (Debian slurm-wlm).

For tests of the pipeline's Slurm profile. Every daemon runs in the foreground from a private
work directory (state, spool, logs, pid files, its own munge key and socket) and is stopped by
its own pid. slurmctld and slurmd bind 127.0.0.1 only (`CommunicationParameters=NoInAddrAny`
with the node's address 127.0.0.1), on free ports.

Slurm's clients (sbatch, squeue, scancel) read `/etc/slurm/slurm.conf`, and the Snakemake
Slurm executor clears SLURM_CONF, so the config is written there for the cluster's lifetime.
A config that is already there (the machine's own) is never overwritten: starting fails
instead. One partition (`PARTITION`) holds the one node, this host, with `cpus` CPUs; there is
no accounting daemon (`AccountingStorageType=accounting_storage/none`), so job states come
from squeue, which keeps finished jobs for `MinJobAge` seconds.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from federation.errors import TransportError
from federation.sandbox.servers.processes import (
    LOOPBACK,
    STARTUP_TIMEOUT_SECONDS,
    ManagedProcess,
    ServerContext,
    free_port,
)

SLURM_CONF = Path("/etc/slurm/slurm.conf")  # where Slurm's clients look when SLURM_CONF is unset
PARTITION = "compute"
MUNGE_KEY_BYTES = 1024  # munged's default key size
MIN_JOB_AGE_SECONDS = 600  # squeue still shows a finished job this long (executor status)

SLURM_CONFIG = """\
# One-node Slurm cluster for the federation tests: loopback only, no accounting.
ClusterName=federation-test
SlurmctldHost={host}({address})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
CommunicationParameters=NoInAddrAny
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
SlurmUser={user}
SlurmdUser=root
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={work}/slurmctld.pid
SlurmdPidFile={work}/slurmd.pid
SlurmctldLogFile={work}/slurmctld.log
SlurmdLogFile={work}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge={min_job_age}
NodeName={host} NodeAddr={address} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster(ServerContext):
    """munged + slurmctld + slurmd for this host, as one partition `PARTITION`."""

    def __init__(
        self,
        work_dir: Path,
        *,
        cpus: int = 2,
        memory_mb: int = 16000,
        startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
    ) -> None:
        self.work_dir = Path(work_dir).absolute()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname().split(".")[0]
        self.cpus, self.memory_mb = cpus, memory_mb
        self.startup_timeout = startup_timeout
        self.munge_socket = self.work_dir / "munge" / "munge.socket"
        self._munged = ManagedProcess("munged", self.work_dir / "munged.out")
        self._slurmctld = ManagedProcess("slurmctld", self.work_dir / "slurmctld.out")
        self._slurmd = ManagedProcess("slurmd", self.work_dir / "slurmd.out")
        self._wrote_config = False

    def _config(self) -> str:
        return SLURM_CONFIG.format(
            host=self.host,
            address=LOOPBACK,
            ctld_port=free_port(),
            slurmd_port=free_port(),
            munge_socket=self.munge_socket,
            user=os.environ.get("USER", "root"),
            state=self.work_dir / "state",
            spool=self.work_dir / "spool",
            work=self.work_dir,
            min_job_age=MIN_JOB_AGE_SECONDS,
            cpus=self.cpus,
            memory_mb=self.memory_mb,
            partition=PARTITION,
        )

    def start(self) -> None:
        if SLURM_CONF.exists():
            raise TransportError(
                f"{SLURM_CONF} exists: this machine has its own Slurm; the test cluster will not "
                "overwrite it",
                retryable=False,
            )
        for name in ("state", "spool", "munge"):
            (self.work_dir / name).mkdir(mode=0o700, exist_ok=True)
        key = self.work_dir / "munge" / "munge.key"
        key.write_bytes(os.urandom(MUNGE_KEY_BYTES))
        key.chmod(0o400)
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(self._config())
        self._wrote_config = True
        try:
            self._start_daemons(key)
        except BaseException:
            self.stop()
            raise

    def _start_daemons(self, key: Path) -> None:
        munge = self.work_dir / "munge"
        self._munged.start(
            [
                "munged",
                "--foreground",
                "--force",  # root, and a key in a directory munged would call insecure
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'munged.seed'}",
                f"--log-file={munge / 'munged.log'}",
            ],
            cwd=self.work_dir,
            wait_until_ready=lambda: self._munged.poll_until(
                self.munge_socket.exists, timeout=self.startup_timeout, what="munged"
            ),
        )
        self._slurmctld.start(
            ["slurmctld", "-D", "-i"],  # -i: no saved state to recover
            cwd=self.work_dir,
            wait_until_ready=lambda: self._slurmctld.poll_until(
                self._controller_answers, timeout=self.startup_timeout, what="slurmctld"
            ),
        )
        self._slurmd.start(
            ["slurmd", "-D", "-N", self.host],
            cwd=self.work_dir,
            wait_until_ready=lambda: self._slurmd.poll_until(
                self._node_idle, timeout=self.startup_timeout, what="slurmd"
            ),
        )

    def _controller_answers(self) -> bool:
        return self._query(["scontrol", "ping"]).find("UP") >= 0

    def _node_idle(self) -> bool:
        return "idle" in self._query(["sinfo", "--noheader", "--format=%t", "--nodes", self.host])

    def _query(self, command: list[str]) -> str:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        return done.stdout

    @property
    def pids(self) -> list[int]:
        processes = (self._munged, self._slurmctld, self._slurmd)
        return [process.pid for process in processes if process.pid is not None]

    def stop(self) -> None:
        for process in (self._slurmd, self._slurmctld, self._munged):
            process.stop()
        if self._wrote_config:
            SLURM_CONF.unlink(missing_ok=True)
            self._wrote_config = False
        shutil.rmtree(self.work_dir / "spool", ignore_errors=True)
