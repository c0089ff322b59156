"""A real Spark standalone cluster on loopback: one master and N workers from the pyspark wheel.

Started as ``bin/spark-class org.apache.spark.deploy.master.Master`` and
``...deploy.worker.Worker`` from the installed pyspark (the Spark that Hail runs on), with
SPARK_LOCAL_IP=127.0.0.1 and ``--host 127.0.0.1``: the master's RPC port, its web UI (which
serves the JSON status read here) and the workers' ports all listen on loopback only, on
free ports. Logs and each worker's work directory (where its executors' stdout/stderr go)
live in one private work directory. `spark-class` execs the JVM, so each process is stopped
by its own pid.

    with SparkStandaloneCluster(work_dir, workers=2) as spark:
        node_yaml["resources"]["spark_master"] = spark.master_url
        ...
        spark.applications()  # what ran on the cluster, from the master's /json/ status
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pyspark

from federation.sandbox.servers.processes import (
    LOOPBACK,
    STARTUP_TIMEOUT_SECONDS,
    ManagedProcess,
    ServerContext,
    free_port,
)

SPARK_HOME = Path(pyspark.__file__).parent  # the wheel carries bin/spark-class and the jars
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
STATUS_TIMEOUT_SECONDS = 5.0


class SparkStandaloneCluster(ServerContext):
    """A master and `workers` workers on 127.0.0.1, each worker offering `cores` and `memory`.

    After construction: `master_url` (spark://127.0.0.1:PORT) and `status_url` (the master's
    JSON status). `status()` is that JSON; `applications()` the running and completed ones.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        workers: int = 2,
        cores: int = 1,
        memory: str = "2g",
        startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
    ) -> None:
        self.work_dir = Path(work_dir).absolute()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.port, self.webui_port = free_port(), free_port()
        self.master_url = f"spark://{LOOPBACK}:{self.port}"
        self.status_url = f"http://{LOOPBACK}:{self.webui_port}/json/"
        self.cores, self.memory = cores, memory
        self.startup_timeout = startup_timeout
        self._master = ManagedProcess("spark master", self.work_dir / "master.log")
        self._workers = [
            ManagedProcess(f"spark worker {index}", self.work_dir / f"worker-{index}.log")
            for index in range(workers)
        ]

    def worker_dir(self, index: int) -> Path:
        """Where worker `index` runs its executors (app-*/N/stdout, stderr)."""
        return self.work_dir / f"worker-{index}"

    @property
    def pids(self) -> list[int]:
        processes = [self._master, *self._workers]
        return [process.pid for process in processes if process.pid is not None]

    def _environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "SPARK_HOME": str(SPARK_HOME),
            "SPARK_LOCAL_IP": LOOPBACK,  # every listening socket, the web UI included
            "SPARK_LOG_DIR": str(self.work_dir),
            "SPARK_NO_DAEMONIZE": "1",
        }

    def _spark_class(self, main_class: str, *arguments: str) -> list[str]:
        return [str(SPARK_HOME / "bin" / "spark-class"), main_class, *arguments]

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.status_url, timeout=STATUS_TIMEOUT_SECONDS) as answer:
            document = json.load(answer)
        return document if isinstance(document, dict) else {}

    def applications(self) -> list[dict[str, Any]]:
        status = self.status()
        return [*status.get("activeapps", []), *status.get("completedapps", [])]

    def start(self) -> None:
        environment = self._environment()
        master = self._spark_class(
            MASTER_CLASS,
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--webui-port",
            str(self.webui_port),
        )
        self._start(self._master, master, environment, lambda: bool(self.status()))
        for index, worker in enumerate(self._workers):
            self.worker_dir(index).mkdir(exist_ok=True)
            command = self._spark_class(
                WORKER_CLASS,
                "--host",
                LOOPBACK,
                "--webui-port",
                str(free_port()),
                "--cores",
                str(self.cores),
                "--memory",
                self.memory,
                "--work-dir",
                str(self.worker_dir(index)),
                self.master_url,
            )
            self._start(worker, command, environment, lambda n=index + 1: self._alive() >= n)

    def _alive(self) -> int:
        return sum(1 for worker in self.status().get("workers", []) if worker["state"] == "ALIVE")

    def _start(
        self,
        process: ManagedProcess,
        command: list[str],
        environment: dict[str, str],
        ready: Any,
    ) -> None:
        def wait() -> None:
            process.poll_until(ready, timeout=self.startup_timeout, what=process.name)

        try:
            process.start(command, cwd=self.work_dir, wait_until_ready=wait, env=environment)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for process in [*self._workers, self._master]:
            process.stop()
