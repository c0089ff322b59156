"""The one place Hail (and so Spark and the JVM) is started.

A JVM start costs seconds, so each pipeline job opens one session and does all its Hail
work in it. Spark is pinned to loopback: an SPE must not open listening ports on other
interfaces, and the Spark UI (which would listen on every interface) is switched off.
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


@dataclass(frozen=True)
class HailSettings:
    master: str = "local[2]"
    driver_memory: str = "4g"
    tmp_dir: str | None = None
    log_path: str | None = None
    reference_genome: str = "GRCh38"
    # Seeds Hail's random functions; set it when a job must give the same random draws on
    # every run (synthetic cohorts). None keeps Hail's default of a fresh seed per session.
    global_seed: int | None = None


def _loopback_spark_conf(settings: HailSettings) -> dict[str, str]:
    return {
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        # Our own progress lines say what is happening; Spark's bars would flood the logs.
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": settings.driver_memory,
        # Small synthetic and national cohorts alike: avoid 200 shuffle partitions of nothing.
        "spark.sql.shuffle.partitions": "8",
    }


@contextmanager
def hail_session(settings: HailSettings, *, stop_at_end: bool = True) -> Iterator[None]:
    """Start Hail once for a job and stop it afterwards, whatever happens in between.

    `hl.stop()` costs about 10 s (Hail's internal HTTP server shuts down slowly). A pipeline
    step is its own process, so it passes `stop_at_end=False`: the JVM ends with the process.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Hail 0.2.139 is tested with Java 11 and warns on the system's Java 17, which works.
    warnings.filterwarnings("ignore", message="Hail was built and tested with Java 11")
    os.environ.setdefault(
        "PYSPARK_SUBMIT_ARGS", f"--driver-memory {settings.driver_memory} pyspark-shell"
    )
    tmp_dir = settings.tmp_dir or tempfile.mkdtemp(prefix="federation-hail-")
    Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    log_path = settings.log_path or str(Path(tmp_dir) / "hail.log")
    hl.init(
        master=settings.master,
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
    try:
        yield
    finally:
        if stop_at_end:
            hl.stop()
