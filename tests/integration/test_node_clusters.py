"""A node study on a real Spark cluster and on a real Slurm cluster gives a local run's release.

The node's `resources.spark_master` names a Spark master; the pipeline's Hail session (one per
node run, `analyses.driver`) connects to it. Here a real Spark 3.5 standalone master and two
workers are started from the pyspark wheel on 127.0.0.1 (`sandbox.servers.spark`), one node
study (allele frequencies + a linear GWAS) runs on them, and the released files must equal
those of the same study run on `local[2]`: tables byte for byte once decompressed, QC metrics
equal, sidecars equal but for their date and their run record's digest. The master's JSON
status shows one Spark application (one driver JVM) for the whole run, and each worker's
work directory holds an executor of that application: the run's tasks ran on both workers (a
driver on a spark:// master runs none).

Slurm: a real munged + slurmctld + slurmd (`sandbox.servers.slurm`, one node = this host, one
partition, loopback) runs the same study twice: through the pipeline's Slurm profile (every
rule an `sbatch` job, job states from squeue), and as one batch job of
`scripts/slurm-spark-run.sh`, which starts a transient Spark standalone cluster inside the
allocation and runs the node pipeline on it. Both must release what the local run released.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from federation.files import REPO_ROOT
from federation.pipeline.runs import PipelineRun
from federation.pipeline.snakemake import run_node_pipeline
from federation.sandbox.servers.processes import free_port
from federation.sandbox.servers.slurm import PARTITION, SLURM_CONF, SlurmCluster
from federation.sandbox.servers.spark import SparkStandaloneCluster
from federation.sandbox.synth import SynthResult
from tests.integration.node_runs import linear_study

pytestmark = pytest.mark.integration

STUDY_ID = "cluster-parity"
# Sidecar fields that name the run rather than the result: the date (two runs may straddle
# midnight) and the digests of the run's provenance record and run crate (both hold its jobs'
# start and end times).
RUN_FIELDS = ("date_metadata_last_modified", "provenance_sha256", "run_crate_sha256")
SLURM_SPARK_SCRIPT = REPO_ROOT / "scripts" / "slurm-spark-run.sh"
BATCH_TIMEOUT_SECONDS = 900  # the node run as one batch job, on a loaded 2-core machine
# The installed slurm profile with this cluster's partition and no accounting project.
SLURM_PROFILE = {
    "executor": "slurm",
    "jobs": 4,
    "latency-wait": 10,
    "rerun-incomplete": True,
    "printshellcmds": True,
    "slurm-status-command": "squeue",
    "slurm-no-account": True,
    # The plugin waits 40 s before asking for a job's state: 4 minutes over a run's stages.
    "slurm-init-seconds-before-status-checks": 5,
    "default-resources": {"slurm_partition": PARTITION, "runtime": 30, "mem_mb": 3000},
    "set-resources": {
        "qc": {"cpus_per_task": 2, "mem_mb": 6000},
        "gwas": {"cpus_per_task": 2, "mem_mb": 6000},
        "allele_frequencies": {"cpus_per_task": 2, "mem_mb": 6000},
    },
}


@dataclass(frozen=True)
class ClusterRun:
    run: PipelineRun
    applications: list[dict[str, Any]]
    executor_apps: list[set[str]]  # per worker: the applications it ran executors for


def _study(root: Path) -> Path:
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(linear_study(STUDY_ID)))
    return path


def _node(root: Path, name: str, cohort: Any, resources: dict[str, Any]) -> Path:
    node = {
        "node_id": "fi",
        "genotypes": {"format": "plink", "path": str(cohort.plink_prefix)},
        "phenotypes": str(cohort.phenotypes),
        "reference_genome": "GRCh38",
        "work_dir": str(root / name / "work"),
        "results_dir": str(root / name / "results"),
        "hail": {"driver_memory": "2g"},
        "resources": {"cores": 2, **resources},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(node))
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("node_clusters")


@pytest.fixture(scope="module")
def local_run(synthetic_cohort: SynthResult, root: Path) -> PipelineRun:
    (cohort,) = synthetic_cohort.nodes
    config = _node(root, "local", cohort, {"spark_master": "local[2]"})
    return run_node_pipeline(config, _study(root))


@pytest.fixture(scope="module")
def spark_run(synthetic_cohort: SynthResult, root: Path) -> ClusterRun:
    (cohort,) = synthetic_cohort.nodes
    with SparkStandaloneCluster(root / "spark", workers=2, cores=1, memory="1g") as spark:
        resources = {
            "spark_master": spark.master_url,
            "spark_executor_memory": "1g",
            "spark_executor_cores": 1,
        }
        run = run_node_pipeline(_node(root, "spark", cohort, resources), _study(root))
        applications = spark.applications()
        logs = [
            "".join(
                path.read_text(errors="replace") for path in spark.worker_dir(i).rglob("stderr")
            )
            for i in range(2)
        ]
    return ClusterRun(run, applications, logs)


def _released(released_dir: Path) -> dict[str, Path]:
    files = (path for path in released_dir.rglob("*") if path.is_file())
    return {path.relative_to(released_dir).as_posix(): path for path in files}


def _assert_same_release(local_run: PipelineRun, other: Path) -> None:
    local, cluster = _released(local_run.released_dir), _released(other)
    assert set(cluster) == set(local)
    assert {"allele_frequencies.tsv.gz", "quant_gwas.tsv.gz", "qc_metrics.json"} <= set(local)
    for name, path in local.items():
        if name.endswith(".tsv.gz"):
            expected = gzip.decompress(path.read_bytes())
            assert expected.count(b"\n") > 1000, f"{name}: too few rows to compare"
            assert gzip.decompress(cluster[name].read_bytes()) == expected, name
        elif name.endswith(".json"):
            assert json.loads(cluster[name].read_text()) == json.loads(path.read_text()), name
        elif name.endswith(".tbi"):  # offsets into the BGZF file: a valid index of each
            for index in (path, cluster[name]):
                assert gzip.decompress(index.read_bytes())[:4] == b"TBI\x01", index
        else:
            expected_sidecar = yaml.safe_load(path.read_text())
            actual_sidecar = yaml.safe_load(cluster[name].read_text())
            for field in RUN_FIELDS:
                expected_sidecar.pop(field), actual_sidecar.pop(field)
            assert actual_sidecar == expected_sidecar, name


def test_the_spark_cluster_releases_the_files_a_local_run_releases(
    local_run: PipelineRun, spark_run: ClusterRun
) -> None:
    _assert_same_release(local_run, spark_run.run.released_dir)


def test_the_run_is_one_spark_application_on_the_cluster(spark_run: ClusterRun) -> None:
    assert len(spark_run.applications) == 1, [app.get("name") for app in spark_run.applications]
    assert spark_run.applications[0]["state"] in ("RUNNING", "FINISHED")


def test_both_workers_ran_executors_of_the_run(spark_run: ClusterRun) -> None:
    (application,) = spark_run.applications
    assert all(application["id"] in apps for apps in spark_run.executor_apps), (
        f"application {application['id']}; executors per worker: {spark_run.executor_apps}"
    )


# ---------------------------------------------------------------- Slurm


@dataclass(frozen=True)
class SlurmRuns:
    profile_run: PipelineRun
    transient_released: Path  # the batch job's published release
    sbatch_jobs: int  # jobs the profile run submitted (from Snakemake's log)
    transient_log: str  # the batch job's output
    transient_executor_apps: set[str]  # applications the transient cluster ran executors for


def _wait_for_job(job_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["squeue", "--noheader", "--states=all", "--format=%T", "--jobs", job_id],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if state and state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return state
        time.sleep(2)
    subprocess.run(["scancel", job_id], check=False)
    return "TIMEOUT (cancelled by the test)"


@pytest.fixture(scope="module")
def slurm_runs(synthetic_cohort: SynthResult, root: Path) -> SlurmRuns:
    if SLURM_CONF.exists():
        pytest.fail(f"{SLURM_CONF} exists: this test needs a host without its own Slurm")
    (cohort,) = synthetic_cohort.nodes
    profile = root / "slurm-profile"
    profile.mkdir()
    (profile / "config.yaml").write_text(yaml.safe_dump(SLURM_PROFILE))
    study = _study(root)
    with SlurmCluster(root / "slurm") as slurm:
        config = _node(root, "slurm", cohort, {"profile": str(profile), "spark_master": "local[2]"})
        profile_run = run_node_pipeline(config, study)
        log = (root / "slurm" / "work" / STUDY_ID / "logs" / "snakemake.log").read_text()
        submitted = log.count("has been submitted with SLURM jobid")

        transient = _node(root, "transient", cohort, {"spark_master": "local[2]"})
        spark_work = root / "transient-spark"
        environment = {
            **os.environ,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_MASTER_PORT": str(free_port()),
            "SPARK_MASTER_WEBUI_PORT": str(free_port()),
            "SPARK_WORKER_MEMORY": "2g",
            "SPARK_WORK_ROOT": str(spark_work),
            "FEDERATION_PYTHON": sys.executable,
        }
        output = root / "transient-job.out"
        command = [sys.executable, "-m", "federation", "node", "run-pipeline"]
        command += ["--node-config", str(transient), "--study-config", str(study)]
        submitted_job = subprocess.run(
            ["sbatch", "--parsable", "--nodes=1", "--cpus-per-task=2", f"--output={output}"]
            + [str(SLURM_SPARK_SCRIPT), *command],
            env=environment,
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        state = _wait_for_job(submitted_job.stdout.strip().split(";")[0], BATCH_TIMEOUT_SECONDS)
        job_log = output.read_text(errors="replace") if output.exists() else ""
        assert state == "COMPLETED", f"batch job {state}: {job_log[-2000:]}"
        executor_apps = {
            path.parent.parent.name for path in (spark_work / "worker").glob("app-*/*/stderr")
        }
    assert slurm.pids == [], "a Slurm daemon outlived the cluster"
    assert not SLURM_CONF.exists()
    return SlurmRuns(
        profile_run,
        root / "transient" / "results" / STUDY_ID / "nodes" / "fi",
        submitted,
        job_log,
        executor_apps,
    )


def test_slurm_jobs_release_the_files_a_local_run_releases(
    local_run: PipelineRun, slurm_runs: SlurmRuns
) -> None:
    assert slurm_runs.sbatch_jobs >= 5  # qc, allele frequencies, gwas and the releases
    _assert_same_release(local_run, slurm_runs.profile_run.released_dir)


def test_a_transient_spark_cluster_in_a_slurm_job_releases_the_same_files(
    local_run: PipelineRun, slurm_runs: SlurmRuns
) -> None:
    assert "spark cluster spark://127.0.0.1:" in slurm_runs.transient_log
    assert len(slurm_runs.transient_executor_apps) == 1  # the run's one Hail session
    _assert_same_release(local_run, slurm_runs.transient_released)
