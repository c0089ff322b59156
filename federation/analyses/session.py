"""The one place Hail (and so Spark and the JVM) is started.

A JVM start costs seconds, so each pipeline job opens one session and does all its Hail
work in it (and a node run's steps share one, `analyses.driver`). Spark is pinned to loopback:
an SPE must not open listening ports on other interfaces, and the Spark UI (which would listen
on every interface) is switched off. On a Spark cluster (`spark://`) the driver binds the
address in SPARK_LOCAL_IP (loopback unless the site sets its cluster address there), so the
cluster's executors can reach it and nothing else is exposed.

The Spark master is node.yaml's (`resources.spark_master`), unless `SPARK_MASTER_ENV` is set:
a job that starts a transient standalone cluster inside its Slurm allocation
(scripts/slurm-spark-run.sh) points the run's sessions at it that way.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hail as hl

SPARK_MASTER_ENV = "FEDERATION_SPARK_MASTER"  # replaces node.yaml's master for this process
LOOPBACK = "127.0.0.1"
# Hail pretty-prints every query's intermediate representation into hail.log at each stage of
# its compiler (~100,000 lines for one small node run), on the driver, on the critical path.
# Hail's own VDS combiner switches that off for speed; so does every session here, unless the
# site sets IR_LOG_ENV=1 to keep the IR in hail.log for a Hail bug report. Results are the same.
IR_LOG_ENV = "FEDERATION_HAIL_IR_LOG"
NO_IR_LOGGING_FLAG = "no_ir_logging"  # a Hail feature flag (hl._set_flags)


@dataclass(frozen=True)
class HailSettings:
    master: str = "local[2]"
    driver_memory: str = "4g"
    executor_memory: str | None = None  # spark.executor.memory on a cluster; None: Spark's
    executor_cores: int | None = None  # spark.executor.cores on a cluster; None: Spark's
    tmp_dir: str | None = None
    log_path: str | None = None
    reference_genome: str = "GRCh38"
    # Seeds Hail's random functions; set it when a job must give the same random draws on
    # every run (synthetic cohorts). None keeps Hail's default of a fresh seed per session.
    global_seed: int | None = None


def spark_master(settings: HailSettings) -> str:
    """The master this process's session connects to: SPARK_MASTER_ENV, else the node's."""
    return os.environ.get(SPARK_MASTER_ENV) or settings.master


def _loopback_spark_conf(settings: HailSettings) -> dict[str, str]:
    # local[N]: loopback. A cluster: the address the site chose for Spark (SPARK_LOCAL_IP).
    address = LOOPBACK
    if not spark_master(settings).startswith("local"):
        address = os.environ.get("SPARK_LOCAL_IP", LOOPBACK)
    conf = {
        "spark.driver.host": address,
        "spark.driver.bindAddress": address,
        "spark.ui.enabled": "false",
        # Our own progress lines say what is happening; Spark's bars would flood the logs.
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": settings.driver_memory,
        # Small synthetic and national cohorts alike: avoid 200 shuffle partitions of nothing.
        "spark.sql.shuffle.partitions": "8",
    }
    if settings.executor_memory:
        conf["spark.executor.memory"] = settings.executor_memory
    if settings.executor_cores:
        conf["spark.executor.cores"] = str(settings.executor_cores)
    return conf


def hail_flags() -> dict[str, str]:
    """Hail feature flags every session sets: IR logging off unless IR_LOG_ENV=1."""
    if os.environ.get(IR_LOG_ENV) == "1":
        return {}
    return {NO_IR_LOGGING_FLAG: "1"}


@contextmanager
def hail_session(settings: HailSettings, *, stop_at_end: bool = True) -> Iterator[None]:
    """Start Hail once for a job and stop it afterwards, whatever happens in between.

    `hl.stop()` costs about 10 s (Hail's internal HTTP server shuts down slowly). A pipeline
    step is its own process, so it passes `stop_at_end=False`: the JVM ends with the process.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    # Hail 0.2.139 is tested with Java 11 and warns on the system's Java 17, which works.
    warnings.filterwarnings("ignore", message="Hail was built and tested with Java 11")
    os.environ.setdefault(
        "PYSPARK_SUBMIT_ARGS", f"--driver-memory {settings.driver_memory} pyspark-shell"
    )
    tmp_dir = settings.tmp_dir or tempfile.mkdtemp(prefix="federation-hail-")
    Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    log_path = settings.log_path or str(Path(tmp_dir) / "hail.log")
    hl.init(
        master=spark_master(settings),
        quiet=True,
        log=log_path,
        tmp_dir=tmp_dir,
        local_tmpdir=tmp_dir,
        show_progress=False,
        spark_conf=_loopback_spark_conf(settings),
        idempotent=True,
        global_seed=settings.global_seed,
    )
    hl.default_reference(settings.reference_genome)
    hl._set_flags(**hail_flags())
    try:
        yield
    finally:
        if stop_at_end:
            hl.stop()
