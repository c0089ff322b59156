"""A node with 50 <= N < 100 on the real pipeline: its allele frequencies leave, its GWAS does not.

One run for the module, on the shared synthetic federation's 'fi' genotypes with phenotypes
for 76 samples only (the size of a small super-population in 1000 Genomes): enough for
allele frequencies (min_cohort_af 50), too few for an association study (min_cohort_gwas
100). The node publishes its policy; the coordinator's dry run predicts exactly that; the
study is submitted and the node agent, started as cron would start it, is killed with SIGKILL
while its first Hail job runs. Nothing of the run survives it (not the Snakemake process, not
the step, not the JVM), and the next run resumes the task once: the allele frequencies are
released with rows, the GWAS is reported withheld, and the exit codes of `run-once` and
`collect` say that something was withheld.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from federation import sumstats
from federation.cli import main
from federation.coordinator.coordinator import Coordinator, Submission
from federation.coordinator.status import NodeState, format_status, study_view
from federation.errors import ExitCode
from federation.files import REPO_ROOT
from federation.node.agent import NodeAgent
from federation.outcomes import AnalysisOutcome, RefusalCategory, ReleaseOutcome
from federation.pipeline.guard import run_processes
from federation.protocol.bundle import pipeline_workflow_digest
from federation.release.rules import DisclosurePolicy
from federation.sandbox.demo import (
    FederationConfigs,
    demo_envelope,
    demo_study,
    mailboxes,
    write_federation_configs,
)
from federation.sandbox.synth import NodeCohort, SynthResult
from federation.settings import load_coordinator, load_node

pytestmark = pytest.mark.integration

STUDY_ID = "small-node"
SAMPLES = 76
JVM_WAIT_SECONDS = 600.0  # the first Hail job's JVM, on a busy 2-core machine
GONE_SECONDS = 30.0  # SIGTERM, the guard's 10 s grace, SIGKILL


@dataclass(frozen=True)
class SmallNode:
    root: Path
    configs: FederationConfigs
    preflight: Submission
    task_id: str
    killed_after_seconds: float
    processes_at_kill: list[int]
    survivors: list[int]
    resumed: subprocess.CompletedProcess[str]
    collect_code: int
    node_state: NodeState
    status_text: str  # `federation study status` after the collect


def _jvm_running(label: str) -> bool:
    """Whether a Java process serves the run (the Hail job's JVM has started)."""
    for pid in run_processes(label):
        try:
            if b"java" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def _agent(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "federation", "node", "run-once", "--config", str(config)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def small_node(
    synthetic_federation: SynthResult, tmp_path_factory: pytest.TempPathFactory
) -> SmallNode:
    root = tmp_path_factory.mktemp("small_node")
    fi = synthetic_federation.nodes[0]
    cohort = NodeCohort("fi", SAMPLES, fi.fst, root / "cohorts" / "fi")
    cohort.directory.mkdir(parents=True)
    for name in ("genotypes.vcf.bgz", "genotypes.vcf.bgz.tbi"):
        (cohort.directory / name).symlink_to(fi.directory / name)
    lines = fi.phenotypes.read_text().splitlines()
    cohort.phenotypes.write_text("\n".join(lines[: SAMPLES + 1]) + "\n")
    study = {**demo_study(["fi"]), "study_id": STUDY_ID, "quorum": 1}
    study["analyses"] = [  # allele frequencies and the quantitative GWAS, without PCs
        {key: value for key, value in analysis.items() if key != "principal_components"}
        for analysis in study["analyses"]
        if analysis["id"] != "binary_trait_gwas"
    ]
    study_path = root / "study.yaml"
    study_path.write_text(yaml.safe_dump(study))
    approval = {"digest": pipeline_workflow_digest(), "envelope": demo_envelope()}
    with mailboxes("local", root, ["fi"], lambda line: None) as boxes:
        configs = write_federation_configs(root, [cohort], boxes, [approval])
    NodeAgent(configs.nodes["fi"]).publish_policy(force=True)
    coordinator = Coordinator(load_coordinator(configs.coordinator))
    preflight = coordinator.submit(study_path, dry_run=True)
    task_id = coordinator.submit(study_path).tasks["fi"]
    label = f"fi/{task_id}"

    started = time.monotonic()
    first = _agent(configs.nodes["fi"])
    try:
        while not _jvm_running(label):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() - started < JVM_WAIT_SECONDS, "no Hail JVM started"
            time.sleep(0.5)
        at_kill = run_processes(label)
        killed_after = time.monotonic() - started
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    deadline = time.monotonic() + GONE_SECONDS
    while run_processes(label) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = run_processes(label)
    for pid in survivors:  # do not leave them to the rest of the suite
        os.kill(pid, signal.SIGKILL)

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "federation",
            "node",
            "run-once",
            "--config",
            str(configs.nodes["fi"]),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    collect_code = main(["study", "collect", STUDY_ID, "--coordinator", str(configs.coordinator)])
    (state,) = study_view(coordinator.ledger, STUDY_ID).nodes
    status_text = format_status(coordinator.ledger, STUDY_ID)
    print(
        f"\nsmall node: JVM up {killed_after:.0f} s after start; resumed run {resumed.returncode}"
    )
    return SmallNode(
        root,
        configs,
        preflight,
        task_id,
        killed_after,
        at_kill,
        survivors,
        resumed,
        collect_code,
        state,
        status_text,
    )


def test_the_dry_run_predicts_the_gwas_withheld_and_the_frequencies_possible(small_node: SmallNode):
    assert small_node.preflight.preflight is not None and not small_node.preflight.sent
    (prediction,) = small_node.preflight.preflight.predictions
    assert prediction.summary() == "node 'fi': runs it without a person"
    limit = DisclosurePolicy().min_cohort_gwas
    assert prediction.analyses["quant_trait_gwas"] == (
        f"withheld (at most 80 genomes < min_cohort_gwas {limit})"
    )
    assert prediction.analyses["allele_frequencies"].startswith("may be released")


def test_killing_the_agent_mid_hail_leaves_no_process_behind(small_node: SmallNode):
    assert len(small_node.processes_at_kill) >= 3  # guard, snakemake, a step and its JVM
    assert small_node.survivors == []


def test_the_next_run_resumes_once_and_releases_what_the_gate_lets_through(small_node: SmallNode):
    resumed = small_node.resumed
    assert resumed.returncode == ExitCode.REFUSED, resumed.stderr[-2000:]  # the GWAS was withheld
    assert resumed.stdout.splitlines() == [
        f"{small_node.task_id}\treleased\tallele_frequencies released, "
        "quant_trait_gwas withheld (cohort_too_small)"
    ]
    audit = (load_node(small_node.configs.nodes["fi"]).work_dir / "audit.jsonl").read_text()
    assert audit.count('"event":"task_resumed"') == 1
    assert audit.count('"event":"result_published"') == 1
    assert audit.count('"event":"release_withheld"') == 1


def test_the_coordinator_gets_the_frequencies_with_rows_and_hears_the_gwas_was_withheld(
    small_node: SmallNode,
):
    assert small_node.collect_code == ExitCode.REFUSED
    state = small_node.node_state
    assert state.status.value == "released"
    assert state.analyses == {
        "allele_frequencies": AnalysisOutcome(ReleaseOutcome.RELEASED),
        "quant_trait_gwas": AnalysisOutcome(
            ReleaseOutcome.WITHHELD, RefusalCategory.COHORT_TOO_SMALL
        ),
    }
    # The researcher reads which remedy applies, never the count behind it.
    (line,) = [line for line in small_node.status_text.splitlines() if line.startswith("fi ")]
    detail = line.split(None, 3)[3]  # node, status, since, detail
    assert detail.startswith("allele_frequencies released, quant_trait_gwas withheld (cohort_")
    assert "76" not in detail and "100" not in detail
    released = small_node.root / "results" / STUDY_ID / "nodes" / "fi"
    assert sorted(path.name for path in released.iterdir()) == [
        "allele_frequencies.tsv.gz",
        "allele_frequencies.tsv.gz-meta.yaml",
        "allele_frequencies.tsv.gz.tbi",
        "qc_metrics.json",
        "ro-crate-metadata.json",  # the node's crate, and what it signed (provenance.crate)
        "signed",
    ]
    table = sumstats.read_table(released / "allele_frequencies.tsv.gz")
    # N is released exactly (docs/privacy-model.md, "Counts: released exactly").
    assert len(table) > 100 and set(table["n_samples"]) == {76}
