"""The CWL node pipeline against the Snakemake one: same cohort, same study, same release.

Both runners run once for this module on the shared `synthetic_cohort` (1,200 samples x
5,000 variants, 1% missing calls, a few low-call-rate samples and variants, so QC removes
something) read from its PLINK files, which also exercises the .bim/.fam secondary files.
The study has allele frequencies, a linear GWAS with principal components and a logistic
Wald GWAS, so the GWAS step is scattered over two analyses.

Every step is the same `federation step` command under both engines, so the released
tables must be byte-identical once decompressed (the same rows, values equal to the last
printed digit). Sidecars may differ in `date_metadata_last_modified` (two runs may straddle
midnight) and in each run's provenance digest: the CWLProv research object's, or the
Snakemake run's record (both stay on the node). The last test breaks the genotypes and checks that a failed CWL run publishes
nothing and keeps the earlier release and its research object.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from federation import sumstats
from federation.errors import PipelineError
from federation.pipeline.cwl import PROVENANCE_DIGEST_FILE, run_cwl_pipeline
from federation.pipeline.runs import PipelineRun
from federation.pipeline.snakemake import run_node_pipeline
from federation.provenance.snakemake import RECORD_NAME as SNAKEMAKE_RECORD
from federation.sandbox.synth import SynthResult

pytestmark = pytest.mark.integration

STUDY_ID = "cwl-parity"
GWAS_IDS = ("quant_gwas", "binary_gwas")
RELEASED = (
    "qc_metrics.json",
    *(
        f"{analysis}.tsv.gz{suffix}"
        for analysis in ("allele_frequencies", *GWAS_IDS)
        for suffix in ("", ".tbi", "-meta.yaml")
    ),
)
# Fields a CWL sidecar has and a Snakemake one does not: the research object's digest.
# The release date: the two runs may fall on either side of midnight (UTC).
DATE_FIELD = "date_metadata_last_modified"


@dataclass(frozen=True)
class Runs:
    root: Path
    snakemake: PipelineRun
    cwl: PipelineRun
    cwl_work: Path
    vcf: Path
    phenotypes: Path


def _study() -> dict:
    return {
        "study_id": STUDY_ID,
        "reference_genome": "GRCh38",
        "engine": "cwl",  # the runners do not read it; the node agent dispatches on it
        "analyses": [
            {"id": "allele_frequencies", "type": "allele_frequency"},
            {
                "id": GWAS_IDS[0],
                "type": "gwas",
                "trait": "quant_trait",
                "trait_type": "quantitative",
                "covariates": ["age", "sex"],
                "principal_components": 2,
            },
            {
                "id": GWAS_IDS[1],
                "type": "gwas",
                "trait": "binary_trait",
                "trait_type": "binary",
                "test": "wald",
                "covariates": ["age", "sex"],
            },
        ],
    }


def _node_config(root: Path, engine: str, genotypes: dict, phenotypes: Path, name: str) -> Path:
    node = {
        "node_id": "fi",
        "genotypes": genotypes,
        "phenotypes": str(phenotypes),
        "reference_genome": "GRCh38",
        "work_dir": str(root / engine / "work"),  # each engine its own node state and ledger
        "results_dir": str(root / engine / "results"),
        "hail": {"master": "local[2]", "driver_memory": "4g"},
    }
    path = root / name
    path.write_text(yaml.safe_dump(node))
    return path


def _timed(run, *args) -> tuple[PipelineRun, float]:
    started = time.monotonic()
    return run(*args), time.monotonic() - started


@pytest.fixture(scope="module")
def runs(synthetic_cohort: SynthResult, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    (cohort,) = synthetic_cohort.nodes
    root = tmp_path_factory.mktemp("cwl_parity")
    study = root / "study.yaml"
    study.write_text(yaml.safe_dump(_study()))
    genotypes = {"format": "plink", "path": str(cohort.plink_prefix)}
    configs = {
        engine: _node_config(root, engine, genotypes, cohort.phenotypes, f"{engine}.yaml")
        for engine in ("snakemake", "cwl")
    }
    # Side by side: the runs share nothing (own work dirs, ledgers, results), and much of each
    # Hail job is JVM and Spark start-up that leaves a core idle, so the tier gets shorter.
    with ThreadPoolExecutor(max_workers=2) as pool:
        snakemake_future = pool.submit(_timed, run_node_pipeline, configs["snakemake"], study)
        cwl_future = pool.submit(_timed, run_cwl_pipeline, configs["cwl"], study)
        snakemake, snakemake_seconds = snakemake_future.result()
        cwl, cwl_seconds = cwl_future.result()
    print(
        f"\nnode pipeline side by side: snakemake {snakemake_seconds:.0f} s, cwltool {cwl_seconds:.0f} s"
    )
    work = root / "cwl" / "work" / STUDY_ID
    return Runs(root, snakemake, cwl, work, cohort.vcf, cohort.phenotypes)


def _names(run: PipelineRun) -> set[str]:
    return {path.relative_to(run.released_dir).as_posix() for path in run.released_files}


def test_both_engines_release_the_same_files(runs: Runs) -> None:
    assert _names(runs.snakemake) == _names(runs.cwl) == set(RELEASED)


@pytest.mark.parametrize("name", [name for name in RELEASED if name.endswith(".tsv.gz")])
def test_released_tables_are_identical(runs: Runs, name: str) -> None:
    with gzip.open(runs.snakemake.released_dir / name, "rt") as handle:
        expected = handle.read().splitlines()
    with gzip.open(runs.cwl.released_dir / name, "rt") as handle:
        actual = handle.read().splitlines()
    assert len(expected) > 1000, f"{name}: too few released rows for a meaningful comparison"
    differing = next(
        (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b), None
    )
    assert differing is None, (
        f"{name} line {differing + 1}:\n snakemake {expected[differing]}\n cwl       {actual[differing]}"
    )
    assert len(actual) == len(expected), f"{name}: {len(actual)} lines != {len(expected)}"
    table = sumstats.read_table(runs.cwl.released_dir / name)
    assert table["variant_id"].is_unique


def test_qc_metrics_are_identical(runs: Runs) -> None:
    expected = json.loads((runs.snakemake.released_dir / "qc_metrics.json").read_text())
    actual = json.loads((runs.cwl.released_dir / "qc_metrics.json").read_text())
    assert actual == expected
    assert actual["counts"]["samples_passed"] < actual["counts"]["samples_genotyped"]


@pytest.mark.parametrize("name", [name for name in RELEASED if name.endswith(".yaml")])
def test_sidecars_differ_only_in_date_and_each_runs_provenance_record(
    runs: Runs, name: str
) -> None:
    expected = yaml.safe_load((runs.snakemake.released_dir / name).read_text())
    actual = yaml.safe_load((runs.cwl.released_dir / name).read_text())
    manifest = runs.cwl_work / "provenance" / PROVENANCE_DIGEST_FILE
    assert actual.pop("provenance_sha256") == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert actual.pop("provenance_digest_of").startswith(PROVENANCE_DIGEST_FILE)
    record = runs.root / "snakemake" / "work" / STUDY_ID / "provenance" / SNAKEMAKE_RECORD
    assert expected.pop("provenance_sha256") == hashlib.sha256(record.read_bytes()).hexdigest()
    assert expected.pop("provenance_digest_of").startswith(SNAKEMAKE_RECORD)
    snakemake_work = runs.root / "snakemake" / "work" / STUDY_ID
    for sidecar, work in ((expected, snakemake_work), (actual, runs.cwl_work)):
        crate_metadata = work / "run-crate" / "ro-crate-metadata.json"
        assert (
            sidecar.pop("run_crate_sha256")
            == hashlib.sha256(crate_metadata.read_bytes()).hexdigest()
        )
        assert "Workflow Run Crate" in sidecar.pop("run_crate_digest_of")
    expected.pop(DATE_FIELD)
    actual.pop(DATE_FIELD)
    assert actual == expected  # data checksums, N, QC counts, disclosure, software versions


def test_research_object_stays_on_the_node(runs: Runs) -> None:
    research_object = runs.cwl_work / "provenance"
    assert (research_object / "bagit.txt").is_file()
    assert (research_object / "workflow" / "packed.cwl").is_file()
    assert research_object.is_relative_to(runs.root / "cwl" / "work")
    assert not (runs.cwl_work / "provenance.run").exists()
    for path in runs.cwl.released_files:  # released files name no node path
        if path.suffix in (".yaml", ".json"):
            assert str(runs.root) not in path.read_text(), path.name


def _broken_vcf(source: Path, path: Path) -> Path:
    """The cohort's VCF header (it passes the pre-flight checks) over a row Hail cannot parse."""
    header = []
    with gzip.open(source, "rt") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            header.append(line)
    samples = len(header[-1].rstrip("\n").split("\t")) - 9
    row = "\t".join(
        ["chr1", "not_a_position", ".", "A", "G", ".", "PASS", ".", "GT"] + ["0/1"] * samples
    )
    path.write_text("".join(header) + row + "\n")
    return path


def test_failed_cwl_run_publishes_nothing_and_keeps_the_release(runs: Runs) -> None:
    published = {path: path.read_bytes() for path in runs.cwl.released_files}
    manifest = runs.cwl_work / "provenance" / PROVENANCE_DIGEST_FILE
    digest = manifest.read_bytes()
    broken = _broken_vcf(runs.vcf, runs.root / "broken.vcf")
    genotypes = {"format": "vcf", "path": str(broken)}
    config = _node_config(runs.root, "cwl", genotypes, runs.phenotypes, "broken.yaml")
    with pytest.raises(PipelineError, match=r"^node 'fi': step 'qc' failed: ") as failure:
        run_cwl_pipeline(config, runs.root / "study.yaml")
    print(f"\n{failure.value}")
    assert "\n" not in str(failure.value)
    now = {path: path.read_bytes() for path in runs.cwl.released_dir.rglob("*") if path.is_file()}
    assert now == published
    assert manifest.read_bytes() == digest
