"""A node study on a real Spark standalone cluster gives the release of a `local[N]` run.

The node's `resources.spark_master` names a Spark master; the pipeline's Hail session (one per
node run, `analyses.driver`) connects to it. Here a real Spark 3.5 standalone master and two
workers are started from the pyspark wheel on 127.0.0.1 (`sandbox.servers.spark`), one node
study (allele frequencies + a linear GWAS) runs on them, and the released files must equal
those of the same study run on `local[2]`: tables byte for byte once decompressed, QC metrics
equal, sidecars equal but for their date. The master's JSON status and the workers' executor
logs show that the work ran on both workers, in one Spark application (one JVM) for the run.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from federation.pipeline.runs import PipelineRun
from federation.pipeline.snakemake import run_node_pipeline
from federation.sandbox.servers.spark import SparkStandaloneCluster
from federation.sandbox.synth import SynthResult

pytestmark = pytest.mark.integration

STUDY_ID = "cluster-parity"
DATE_FIELD = "date_metadata_last_modified"  # two runs may straddle midnight
EXECUTOR_TASK_LINE = "Finished task"  # what a Spark executor logs for each task it ran


@dataclass(frozen=True)
class ClusterRun:
    run: PipelineRun
    applications: list[dict[str, Any]]
    executor_logs: list[str]  # per worker: its executors' stderr, concatenated


def _study(root: Path) -> Path:
    study = {
        "study_id": STUDY_ID,
        "reference_genome": "GRCh38",
        "analyses": [
            {"id": "allele_frequencies", "type": "allele_frequency"},
            {
                "id": "quant_gwas",
                "type": "gwas",
                "trait": "quant_trait",
                "trait_type": "quantitative",
                "covariates": ["age", "sex"],
            },
        ],
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study))
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


def _released(run: PipelineRun) -> dict[str, Path]:
    return {path.relative_to(run.released_dir).as_posix(): path for path in run.released_files}


def test_the_spark_cluster_releases_the_files_a_local_run_releases(
    local_run: PipelineRun, spark_run: ClusterRun
) -> None:
    local, cluster = _released(local_run), _released(spark_run.run)
    assert set(cluster) == set(local)
    assert {"allele_frequencies.tsv.gz", "quant_gwas.tsv.gz", "qc_metrics.json"} <= set(local)
    for name, path in local.items():
        if name.endswith(".tsv.gz"):
            expected = gzip.decompress(path.read_bytes())
            assert expected.count(b"\n") > 1000, f"{name}: too few rows to compare"
            assert gzip.decompress(cluster[name].read_bytes()) == expected, name
        elif name.endswith(".json"):
            assert json.loads(cluster[name].read_text()) == json.loads(path.read_text()), name
        else:
            expected_sidecar = yaml.safe_load(path.read_text())
            actual_sidecar = yaml.safe_load(cluster[name].read_text())
            expected_sidecar.pop(DATE_FIELD), actual_sidecar.pop(DATE_FIELD)
            assert actual_sidecar == expected_sidecar, name


def test_the_run_is_one_spark_application_on_the_cluster(spark_run: ClusterRun) -> None:
    assert len(spark_run.applications) == 1, [app.get("name") for app in spark_run.applications]
    assert spark_run.applications[0]["state"] in ("RUNNING", "FINISHED")


def test_both_workers_ran_tasks_of_the_run(spark_run: ClusterRun) -> None:
    tasks = [log.count(EXECUTOR_TASK_LINE) for log in spark_run.executor_logs]
    assert all(count > 0 for count in tasks), f"tasks per worker: {tasks}"
