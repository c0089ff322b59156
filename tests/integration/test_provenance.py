"""The study crate of real federations (Hail, Snakemake or cwltool, the real coordinator):
validated with rocrate-validator, verified, and reproduced byte for byte.

The Snakemake crate is the one the coordinator wrote for the session's `federated_run` (the
three-node federation test_federation.py checks; tests/integration/federated_runs.py). The
`federation demo` command runs twice for this module, side by side, at the smallest sizes that
release every analysis: on two Snakemake nodes, where it must print where its verified crate
is, and which is reproduced from its recorded seeds (`reproduce --nodes synthetic`); and on
one cwltool node, whose crate is validated and verified too. The negative cases of `verify` are in the unit tier
(tests/unit/provenance/), on crates the coordinator writes the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from federation.cli import main
from federation.files import REPO_ROOT, sha256_file
from federation.provenance.run_crate import RUN_CRATE_DIR, RUN_CRATE_PROFILES
from federation.provenance.verify import validate_crate, validator_command, verify_crate
from federation.sandbox.demo import DEMO_STUDY_ID
from federation.sandbox.reproduce import reproduce_synthetic
from tests.integration.federated_runs import FederatedRun

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(validator_command() is None, reason="rocrate-validator: bootstrap.sh"),
]

# The smallest demo that releases every analysis: 200 samples ('fi'; 'ee' has 280) clear the
# GWAS minimum of 100 with room to spare; 1,000 variants leave over a hundred rows per table.
DEMO_OPTIONS = ["--samples-per-node", "200", "--variants", "1000", "--seed", "7"]
DEMO_NODES = {"snakemake": 2, "cwl": 1}  # per engine
DEMO_SECONDS = 1200  # both demos side by side on a loaded 2-core machine


@dataclass(frozen=True)
class Demo:
    crate: Path
    summary: str  # what `federation demo` printed on stdout


@pytest.fixture(scope="module")
def snakemake_crate(federated_run: FederatedRun) -> Path:
    """The study crate of the session's three-node Snakemake federation."""
    return federated_run.study_dir


def _output(root: Path, engine: str, stream: str) -> Path:
    return root / f"demo-{engine}.{stream}"


def _start_demo(root: Path, engine: str) -> subprocess.Popen[bytes]:
    """`federation demo --out ROOT/ENGINE`, its stdout and stderr in files beside."""
    out = root / engine
    command = [sys.executable, "-m", "federation", "demo", "--out", str(out), "--engine", engine]
    command += ["--nodes", str(DEMO_NODES[engine]), *DEMO_OPTIONS]
    stdout_path, stderr_path = (_output(root, engine, stream) for stream in ("stdout", "stderr"))
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group: stopped whole if the test fails
        )


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Demo]]:
    """`federation demo` once per engine, the two commands side by side (much of each is JVM
    and Spark start-up that leaves a core idle); each must exit 0."""
    root = tmp_path_factory.mktemp("demos").resolve()
    running = {engine: _start_demo(root, engine) for engine in DEMO_NODES}
    try:
        deadline = time.monotonic() + DEMO_SECONDS
        for engine, process in running.items():
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            stderr = _output(root, engine, "stderr").read_text(errors="replace")
            assert code == 0, f"{engine} demo exited {code}: {stderr[-3000:]}"
        yield {
            engine: Demo(
                root / engine / "results" / DEMO_STUDY_ID,
                _output(root, engine, "stdout").read_text(errors="replace"),
            )
            for engine in DEMO_NODES
        }
    finally:
        for process in running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def snakemake_demo(demos: dict[str, Demo]) -> tuple[Path, str]:
    """The Snakemake demo's study crate, and what the command printed."""
    return demos["snakemake"].crate, demos["snakemake"].summary


@pytest.fixture(scope="module")
def cwl_demo(demos: dict[str, Demo]) -> Path:
    return demos["cwl"].crate


def test_the_demo_prints_where_its_verified_crate_is(snakemake_demo: tuple[Path, str]) -> None:
    crate, summary = snakemake_demo
    assert f"study RO-Crate: {crate / 'ro-crate-metadata.json'} (verified" in summary


def _validates_and_verifies(crate: Path, main_workflow: str) -> None:
    result = verify_crate(crate, validate=True)
    assert result.problems == []
    assert (
        "RO-Crate profiles: workflow-run-crate, provenance-run-crate, ro-crate-1.2"
        in result.checked
    )
    assert (crate / "workflow" / main_workflow).is_file()


def _sidecars_name_their_run_and_code(crate: Path) -> None:
    sidecars = sorted(crate.glob("nodes/*/*.tsv.gz*.yaml"))
    assert sidecars
    for sidecar in sidecars:
        document = yaml.safe_load(sidecar.read_text())
        assert len(document["provenance_sha256"]) == 64, sidecar
        identity = document["code_identity"]
        assert len(identity["bundle_sha256"]) == 64 and identity["workflow_files"], sidecar


def test_the_snakemake_federation_crate_validates_and_verifies(snakemake_crate: Path) -> None:
    _validates_and_verifies(snakemake_crate, "Snakefile")


def test_the_snakemake_demo_crate_verifies(snakemake_demo: tuple[Path, str]) -> None:
    assert verify_crate(snakemake_demo[0], validate=False).problems == []


def test_the_cwl_demo_crate_validates_and_verifies(cwl_demo: Path) -> None:
    _validates_and_verifies(cwl_demo, "workflows/node_pipeline.cwl")


def test_snakemake_released_sidecars_carry_the_run_record_digest_and_code_identity(
    snakemake_crate: Path,
) -> None:
    _sidecars_name_their_run_and_code(snakemake_crate)


def test_cwl_released_sidecars_carry_the_research_object_digest_and_code_identity(
    cwl_demo: Path,
) -> None:
    _sidecars_name_their_run_and_code(cwl_demo)


def test_verify_on_the_command_line_exits_0(snakemake_crate: Path) -> None:
    assert main(["verify", str(snakemake_crate)]) == 0


def test_a_changed_copy_of_the_crate_fails_verify(snakemake_crate: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(snakemake_crate, tmp_path / "copy"))
    assert main(["verify", str(copy), "--no-validate"]) == 0  # the copy as it was verifies
    table = copy / "nodes" / "fi" / "quant_trait_gwas.tsv.gz"
    table.write_bytes(table.read_bytes() + b"\x00")
    assert main(["verify", str(copy), "--no-validate"]) == 1


def test_reproduce_gives_byte_identical_meta_files(snakemake_crate: Path, tmp_path: Path) -> None:
    assert main(["reproduce", str(snakemake_crate), "--out", str(tmp_path / "again")]) == 0
    for name in ("allele_frequencies", "quant_trait_gwas", "binary_trait_gwas"):
        again = tmp_path / "again" / "meta" / f"{name}.tsv.gz"
        assert again.read_bytes() == (snakemake_crate / "meta" / f"{name}.tsv.gz").read_bytes()


def test_reproduce_with_synthetic_nodes_gives_byte_identical_node_releases(
    snakemake_demo: tuple[Path, str], tmp_path: Path
) -> None:
    result = reproduce_synthetic(snakemake_demo[0], tmp_path / "again", progress=lambda line: None)
    assert result.different == []
    released = [line for line in result.identical if line.startswith("nodes/")]
    for node in ("fi", "ee"):
        for name in ("allele_frequencies", "quant_trait_gwas", "binary_trait_gwas"):
            assert f"nodes/{node}/{name}.tsv.gz: byte-identical" in released
    assert "meta/quant_trait_gwas.tsv.gz: byte-identical" in result.identical


def _node_run_crates_validate_and_only_their_digests_leave(crate: Path, nodes: int) -> None:
    """Each node keeps its run's Workflow Run Crate beside its run record (in its work dir);
    it validates, and what the node released carries its digest, never the crate."""
    work_dirs = sorted(crate.parent.parent.glob(f"nodes/*/work/{DEMO_STUDY_ID}"))
    assert len(work_dirs) == nodes
    for work in work_dirs:
        run_crate = work / RUN_CRATE_DIR
        assert validate_crate(run_crate, RUN_CRATE_PROFILES) == [], work
        digest = sha256_file(run_crate / "ro-crate-metadata.json")
        released = crate / "nodes" / work.parent.parent.name
        sidecars = sorted(released.glob("*.tsv.gz*.yaml"))
        assert sidecars
        for sidecar in sidecars:
            assert yaml.safe_load(sidecar.read_text())["run_crate_sha256"] == digest, sidecar
        names = {path.name for path in crate.rglob("*")}
        assert RUN_CRATE_DIR not in names and "snakemake-run.json" not in names
        assert not (names & {"bagit.txt", "packed.cwl", "primary.cwlprov.json"})


def test_snakemake_nodes_keep_a_run_crate_that_validates_and_release_only_its_digest(
    snakemake_demo: tuple[Path, str],
) -> None:
    _node_run_crates_validate_and_only_their_digests_leave(snakemake_demo[0], nodes=2)


def test_the_cwl_node_keeps_its_converted_run_crate_that_validates_and_releases_only_its_digest(
    cwl_demo: Path,
) -> None:
    _node_run_crates_validate_and_only_their_digests_leave(cwl_demo, nodes=1)
    research_object = cwl_demo.parent.parent / "nodes" / "fi" / "work" / DEMO_STUDY_ID
    graph = json.loads((research_object / RUN_CRATE_DIR / "ro-crate-metadata.json").read_text())
    main_workflow = next(e for e in graph["@graph"] if e["@id"] == "./")["mainEntity"]
    assert main_workflow == {"@id": "packed.cwl"}  # runcrate's conversion of the CWLProv record
