"""The federation end to end: real Snakemake/Hail node pipelines, then the pooled analysis.

One federated run (local mailboxes) of the shared synthetic federation (3 nodes, 1,000 /
1,400 / 1,200 samples x 5,000 variants) goes through the real pipeline: signed tasks, node
policy, QC, allele frequencies, a linear and a logistic GWAS per node, the disclosure gate,
signed results, collection and the IVW meta-analysis, and the study report the coordinator
writes from them (its figures, lead loci, forest data, and the page in a real browser). The
run is the session's `federated_run` (tests/integration/federated_runs.py): test_provenance.py
checks its RO-Crate and test_node_vs_plink2.py holds node 'fi's release to plink2. The study
has no principal components, so the pooled analysis below can fit exactly the same model:
Hail over the union of the nodes' VCFs with age, sex and node indicators as covariates.

The same federation then runs over a real S3 server (SeaweedFS on loopback, per-node
credentials). The Hail pipeline is the only step not repeated there: a stand-in re-releases
the files each node released in the local run (the pipeline never touches the transport),
so the S3 run must give byte-identical meta-analysis files. The S3 server is restarted in the
middle of a node's upload on the way. Last, two transport-level refusals at the federation
level: a node's S3 keys cannot write into another node's bucket, and the coordinator does
not connect to an SSH node whose host key changed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

import federation.node.agent as agent_module
from federation import sumstats
from federation.coordinator.coordinator import Coordinator, MailboxesUnreachable
from federation.errors import TransportError
from federation.pipeline.runs import PipelineRun
from federation.protocol.bundle import pipeline_workflow_digest
from federation.protocol.crypt import SEALED_RESULT
from federation.protocol.messages import MailboxKeys, TaskStatus
from federation.sandbox.demo import (
    Mailboxes,
    mailboxes,
    write_federation_configs,
)
from federation.sandbox.synth import NodeCohort, SynthResult
from federation.settings import load_coordinator, load_node
from federation.transport import open_transport
from federation.transport.s3 import S3Transport, mailbox_bucket
from tests import gwas_ssf
from tests.integration.browser import launch_chromium
from tests.integration.federated_runs import (
    STUDY_ID,
    FederatedRun,
    comparison_study,
    quiet,
    run_federation,
)
from tests.unit.report.checks import assert_forest_matches

pytestmark = pytest.mark.integration

ANALYSES = {"quant_trait_gwas": "quant_trait", "binary_trait_gwas": "binary_trait"}
META_FILES = ("allele_frequencies.tsv.gz", "quant_trait_gwas.tsv.gz", "binary_trait_gwas.tsv.gz")
MIN_BETA_CORRELATION = 0.99
MIN_MAF = 0.05
GENOME_WIDE = 5e-8
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
S3_RESTART_PAUSE_SECONDS = 1.0  # the server is away this long while a node uploads


def assert_clean_mailboxes(run: FederatedRun) -> None:
    """Inbox emptied by each node; outbox: one status, one result, one marker, nothing partial;
    and the node's signed policy."""
    for node, keys in run.mailbox_keys.items():
        assert keys[-1] == MailboxKeys.POLICY, (node, keys)
        tasks = {key.split("/")[1] for key in keys[:-1]}
        assert len(tasks) == 1, (node, keys)
        task = tasks.pop()
        assert keys[:-1] == [
            f"outbox/{task}/{name}" for name in ("COMPLETE", "STATUS.json", SEALED_RESULT)
        ]


# ------------------------------------------------------------------ the pooled analysis


@pytest.fixture(scope="module")
def pooled(
    synthetic_federation: SynthResult, tmp_path_factory: pytest.TempPathFactory
) -> pd.DataFrame:
    return pooled_analysis(synthetic_federation.nodes, tmp_path_factory.mktemp("pooled_hail"))


def pooled_analysis(nodes: Sequence[NodeCohort], scratch: Path) -> pd.DataFrame:
    """Hail over all samples: y ~ 1 + age + sex + one indicator per node but the first + G."""
    import hail as hl

    from federation.analyses.session import HailSettings, hail_session

    with hail_session(HailSettings(tmp_dir=str(scratch)), stop_at_end=True):
        mt = None
        for cohort in nodes:
            node_mt = hl.import_vcf(str(cohort.vcf), reference_genome="GRCh38", force_bgz=True)
            mt = node_mt if mt is None else mt.union_cols(node_mt)
        assert mt is not None
        phenotypes = pd.concat(
            [
                pd.read_csv(cohort.phenotypes, sep="\t").assign(node=cohort.node_id)
                for cohort in nodes
            ],
            ignore_index=True,
        )
        assert phenotypes["sample_id"].is_unique and len(phenotypes) == mt.count_cols()
        pheno = hl.Table.from_pandas(phenotypes, key="sample_id")
        mt = mt.annotate_cols(pheno=pheno[mt.s])
        indicators = [hl.float64(mt.pheno.node == cohort.node_id) for cohort in nodes[1:]]
        covariates = [1.0, hl.float64(mt.pheno.age), hl.float64(mt.pheno.sex), *indicators]
        x = mt.GT.n_alt_alleles()
        linear = hl.linear_regression_rows(
            y=hl.float64(mt.pheno.quant_trait), x=x, covariates=covariates
        )
        logistic = hl.logistic_regression_rows(
            test="wald", y=hl.float64(mt.pheno.binary_trait), x=x, covariates=covariates
        )
        mt = mt.annotate_rows(
            alt_frequency=hl.agg.mean(x) / 2,
            quant_trait_gwas=linear[mt.row_key].select("beta", "p_value"),
            binary_trait_gwas=logistic[mt.row_key].select("beta", "p_value"),
        )
        rows = mt.rows()
        frame = rows.select(
            chromosome=rows.locus.contig.replace("^chr", ""),
            base_pair_location=rows.locus.position,
            ref=rows.alleles[0],
            alt=rows.alleles[1],
            alt_frequency=rows.alt_frequency,
            quant_trait_gwas_beta=rows.quant_trait_gwas.beta,
            quant_trait_gwas_p=rows.quant_trait_gwas.p_value,
            binary_trait_gwas_beta=rows.binary_trait_gwas.beta,
            binary_trait_gwas_p=rows.binary_trait_gwas.p_value,
        ).to_pandas()
    return frame.drop(columns=["locus", "alleles"])


def aligned(meta_file: Path, pooled: pd.DataFrame, analysis: str) -> pd.DataFrame:
    """Meta rows over all three nodes with the pooled beta of the same allele beside them."""
    meta = sumstats.read_table(meta_file)
    meta = meta[meta["n_studies"] == 3]
    merged = meta.merge(pooled, on=["chromosome", "base_pair_location"], how="inner")
    same = (merged["effect_allele"] == merged["alt"]) & (merged["other_allele"] == merged["ref"])
    swapped = (merged["effect_allele"] == merged["ref"]) & (merged["other_allele"] == merged["alt"])
    assert (same | swapped).all(), "meta and pooled disagree on a variant's alleles"
    merged["pooled_beta"] = np.where(same, 1.0, -1.0) * merged[f"{analysis}_beta"]
    merged["pooled_p"] = merged[f"{analysis}_p"]
    merged["maf"] = np.minimum(merged["alt_frequency"], 1 - merged["alt_frequency"])
    return merged


# ------------------------------------------------------------------ tests


def failures(run: FederatedRun, node: str) -> list[str]:
    """The node audit log's reasons for failed tasks (what the coordinator is not told)."""
    audit = load_node(run.configs.nodes[node]).work_dir / "audit.jsonl"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    return [str(record.get("reason")) for record in records if record["event"] == "task_failed"]


def test_every_node_releases_and_the_coordinator_meta_analyses(federated_run: FederatedRun) -> None:
    for node, outcomes in federated_run.outcomes.items():
        statuses = [outcome.status for outcome in outcomes]
        assert statuses == [TaskStatus.RELEASED], (node, failures(federated_run, node))
    nodes = sorted(federated_run.outcomes)
    assert federated_run.collection.released == nodes and federated_run.collection.missing == []
    assert sorted(path.name for path in federated_run.collection.meta_files) == sorted(META_FILES)
    assert "released: 3; missing: none" in federated_run.status
    assert_clean_mailboxes(federated_run)
    for node in nodes:
        verified = federated_run.root / "results" / STUDY_ID / "nodes" / node
        released = federated_run.released_dir(node)
        names = sorted(path.name for path in released.iterdir())
        assert {f"{analysis}.tsv.gz" for analysis in ANALYSES} <= set(names)
        # beside the verified copies: what the node signed, and the node's crate
        kept = sorted(path.name for path in verified.iterdir())
        assert kept == sorted([*names, "ro-crate-metadata.json", "signed"])
        for name in names:
            assert (verified / name).read_bytes() == (released / name).read_bytes()
    print(f"\nnode pipelines (3 nodes side by side): {federated_run.node_seconds:.0f} s")


def test_released_and_meta_files_are_read_as_they_are_by_gwas_ssf_and_tabix(
    federated_run: FederatedRun,
) -> None:
    """Every released and meta GWAS file passes the GWAS Catalog's validator with its
    `-meta.yaml` sidecar; tabix answers a region query on a released file; the nodes' VCF
    alleles are declared reference-aligned, so the meta-analysis keeps their A/T and C/G SNPs."""
    for analysis in ANALYSES:
        meta_file = federated_run.meta_dir / f"{analysis}.tsv.gz"
        gwas_ssf.validate(meta_file, min_rows=1000)
        record = sumstats.read_sidecar(meta_file)
        assert all(entry["reference_aligned"] for entry in record["inputs"])
        assert not any("palindromic" in r for e in record["inputs"] for r in e["dropped"])
        for node in federated_run.outcomes:
            released = federated_run.released_dir(node) / f"{analysis}.tsv.gz"
            gwas_ssf.validate(released, min_rows=1000)
            assert sumstats.find_sidecar(released) == sumstats.sidecar_path(released)
    released = (
        federated_run.released_dir(sorted(federated_run.outcomes)[0]) / "quant_trait_gwas.tsv.gz"
    )
    table = sumstats.read_table(released)
    row = table.iloc[len(table) // 2]
    region = f"{row.chromosome}:{row.base_pair_location}-{row.base_pair_location}"
    done = subprocess.run(["tabix", str(released), region], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert row.variant_id in [line.split("\t")[9] for line in done.stdout.splitlines()]


@pytest.mark.parametrize("analysis", sorted(ANALYSES))
def test_meta_analysis_agrees_with_the_pooled_analysis(
    federated_run: FederatedRun, pooled: pd.DataFrame, analysis: str
) -> None:
    merged = aligned(federated_run.meta_dir / f"{analysis}.tsv.gz", pooled, analysis)
    common = merged[merged["maf"] > MIN_MAF]
    assert len(common) > 2000, f"only {len(common)} common variants meta-analysed over 3 nodes"
    correlation = float(np.corrcoef(common["beta"], common["pooled_beta"])[0, 1])
    assert correlation > MIN_BETA_CORRELATION, f"{analysis}: beta correlation {correlation:.4f}"
    print(f"\n{analysis}: beta correlation {correlation:.5f} over {len(common)} variants, MAF > 5%")


@pytest.mark.parametrize("analysis", sorted(ANALYSES))
def test_planted_variants_are_genome_wide_significant_in_both(
    federated_run: FederatedRun,
    pooled: pd.DataFrame,
    synthetic_federation: SynthResult,
    analysis: str,
) -> None:
    merged = aligned(federated_run.meta_dir / f"{analysis}.tsv.gz", pooled, analysis)
    by_locus = merged.set_index(["chromosome", "base_pair_location"])
    planted = synthetic_federation.causal_variants
    assert len(planted) >= 3
    for variant in planted:
        row = by_locus.loc[(variant.chromosome, variant.position)]
        assert float(row["p_value"]) < GENOME_WIDE, f"{variant.variant_id}: meta p {row['p_value']}"
        assert row["pooled_p"] < GENOME_WIDE, f"{variant.variant_id}: pooled p {row['pooled_p']}"
        planted_effect = (
            variant.beta_quant_trait
            if analysis == "quant_trait_gwas"
            else variant.log_or_binary_trait
        )
        assert np.sign(row["pooled_beta"]) == np.sign(row["beta"]) == np.sign(planted_effect)


# ------------------------------------------------------------------ the study report


def report_data(run: FederatedRun) -> dict[str, Any]:
    return json.loads((run.root / "results" / STUDY_ID / "report.json").read_text())


def test_the_coordinator_writes_the_study_report_with_valid_figures(
    federated_run: FederatedRun,
) -> None:
    study_dir = federated_run.root / "results" / STUDY_ID
    page = (study_dir / "report.html").read_text()
    figures = sorted((study_dir / "plots").iterdir())
    assert {path.suffix for path in figures} == {".png", ".svg"}
    for path in figures:
        assert f"plots/{path.name}" in page
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC
            with Image.open(path) as image:
                image.verify()
        else:
            assert ElementTree.parse(path).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    data = report_data(federated_run)
    assert sorted(section["analysis"] for section in data["analyses"]) == sorted(ANALYSES)
    assert data["provenance"]["coordinator"]["quorum"] == 3
    assert data["provenance"]["coordinator"]["workflow_digest"] == pipeline_workflow_digest()
    assert sorted(node["node_id"] for node in data["nodes"]) == sorted(federated_run.outcomes)
    assert data["frequencies"]["n_variants"] > 4000


@pytest.mark.parametrize("analysis", sorted(ANALYSES))
def test_the_report_leads_are_the_planted_variants(
    federated_run: FederatedRun, synthetic_federation: SynthResult, analysis: str
) -> None:
    section = next(s for s in report_data(federated_run)["analyses"] if s["analysis"] == analysis)
    leads = {(str(lead["chromosome"]), lead["position"]) for lead in section["leads"]}
    planted = {(v.chromosome, v.position) for v in synthetic_federation.causal_variants}
    assert planted <= leads, f"{analysis}: planted {sorted(planted - leads)} not among the leads"


@pytest.mark.parametrize("analysis", sorted(ANALYSES))
def test_the_report_forest_data_equal_the_node_files(
    federated_run: FederatedRun, analysis: str
) -> None:
    section = next(s for s in report_data(federated_run)["analyses"] if s["analysis"] == analysis)
    node_files = {
        node: federated_run.released_dir(node) / f"{analysis}.tsv.gz"
        for node in federated_run.outcomes
    }
    assert section["leads"]
    for lead in section["leads"]:
        assert_forest_matches(lead, node_files, federated_run.meta_dir / f"{analysis}.tsv.gz")


def test_the_report_renders_in_a_real_browser_on_a_phone(federated_run: FederatedRun) -> None:
    page_path = federated_run.root / "results" / STUDY_ID / "report.html"
    with launch_chromium() as browser:
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(page_path.as_uri(), wait_until="load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])"
        )
        assert len(images) >= 2 * len(ANALYSES) + 1
        broken = [src for src, complete, width in images if not (complete and width > 0)]
        assert not broken, f"images that did not load: {broken}"
        for analysis in ANALYSES:
            table = page.locator(f"table.leads[data-analysis='{analysis}']")
            assert table.count() == 1 and table.locator("tr").count() >= 2
        # Wide tables scroll inside their box: the page itself fits the phone's width.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
        assert all(url.startswith("file://") for url in requests), requests


def test_the_same_federation_over_s3_gives_identical_meta_files(
    federated_run: FederatedRun,
    synthetic_federation: SynthResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def re_release(node_config: Path, study_config: Path, **_: Any) -> PipelineRun:
        """The local run's released files, released again by this node (no Hail)."""
        node = load_node(node_config)
        source = federated_run.released_dir(node.node_id)
        destination = node.results_dir / STUDY_ID / "nodes" / node.node_id
        shutil.copytree(source, destination)
        files = tuple(sorted(path for path in destination.rglob("*") if path.is_file()))
        return PipelineRun(node.node_id, STUDY_ID, destination, files, destination / "log")

    monkeypatch.setattr(agent_module, "run_pipeline", re_release)
    restarts: list[str] = []
    original_put_file = S3Transport.put_file

    def restart_the_server_during_the_first_result_upload(boxes: Mailboxes) -> None:
        server = boxes.server

        def put_file(self: S3Transport, key: str, source: Path) -> None:
            if key.endswith(f"/{SEALED_RESULT}") and not restarts:
                restarts.append(key)
                server.stop()  # the upload below starts while the server is away
                threading.Timer(S3_RESTART_PAUSE_SECONDS, server.start).start()
            original_put_file(self, key, source)

        monkeypatch.setattr(S3Transport, "put_file", put_file)

    s3_run = run_federation(
        tmp_path / "s3",
        synthetic_federation,
        "s3",
        restart_the_server_during_the_first_result_upload,
    )

    assert len(restarts) == 1, "the S3 server was not restarted during an upload"
    for node, outcomes in s3_run.outcomes.items():
        assert [outcome.status for outcome in outcomes] == [TaskStatus.RELEASED], (node, outcomes)
    assert s3_run.collection.released == federated_run.collection.released
    assert_clean_mailboxes(s3_run)
    for name in META_FILES:
        assert (s3_run.meta_dir / name).read_bytes() == (
            federated_run.meta_dir / name
        ).read_bytes(), name
    for node in s3_run.outcomes:  # the transport's retries rode the restart out
        audit = (load_node(s3_run.configs.nodes[node]).work_dir / "audit.jsonl").read_text()
        assert "task_deferred" not in audit and "result_published" in audit


def paper_cohorts(root: Path) -> list[NodeCohort]:
    """Node entries for tests that never run a pipeline (their files need not exist)."""
    return [NodeCohort(node, 1000, 0.01, root / "cohorts" / node) for node in ("fi", "ee", "nl")]


def test_a_node_cannot_write_into_another_nodes_bucket(tmp_path: Path) -> None:
    cohorts = paper_cohorts(tmp_path)
    node_ids = [cohort.node_id for cohort in cohorts]
    with mailboxes("s3", tmp_path, node_ids, quiet) as boxes:
        configs = write_federation_configs(tmp_path, cohorts, boxes, [])
        victim, intruder = node_ids[0], node_ids[1]
        own = load_node(configs.nodes[intruder]).federation
        assert own is not None
        with closing(open_transport(own.mailbox, tmp_path, "intruder")) as mailbox:
            mailbox.put_bytes("outbox/probe/STATUS.json", b"{}")  # its own bucket: allowed
        foreign = {**own.mailbox, "bucket": mailbox_bucket(victim)}
        with closing(open_transport(foreign, tmp_path, "intruder")) as mailbox:
            for attempt in (
                lambda: mailbox.put_bytes("outbox/forged/COMPLETE", b"{}"),
                lambda: mailbox.list("outbox/"),
                lambda: mailbox.delete("inbox/x/envelope.json"),
            ):
                with pytest.raises(TransportError, match="denied") as refused:
                    attempt()
                assert not refused.value.retryable
        coordinator = Coordinator(load_coordinator(configs.coordinator))
        with closing(coordinator.mailbox(victim)) as mailbox:
            assert mailbox.list("") == []


def test_coordinator_refuses_an_ssh_node_whose_host_key_changed(tmp_path: Path) -> None:
    cohorts = paper_cohorts(tmp_path)
    node_ids = [cohort.node_id for cohort in cohorts]
    study = comparison_study(node_ids)
    with mailboxes("ssh", tmp_path, node_ids, quiet) as boxes:
        configs = write_federation_configs(tmp_path, cohorts, boxes, [])
        for study_id in ("before-rotation", "after-rotation"):
            (tmp_path / f"{study_id}.yaml").write_text(
                yaml.safe_dump({**study, "study_id": study_id, "quorum": 1})
            )
        coordinator = Coordinator(load_coordinator(configs.coordinator))
        before = coordinator.submit(tmp_path / "before-rotation.yaml")
        assert sorted(before.tasks) == sorted(node_ids)  # the pinned key works

        known_hosts = Path(boxes.coordinator_side[node_ids[0]]["known_hosts"])
        pinned = known_hosts.read_text()
        boxes.server.rotate_host_key()  # the node's login host now shows another key
        known_hosts.write_text(pinned)  # while the coordinator still pins the old one

        # The pre-flight reaches no node: nothing is sent, nothing recorded, one line per node.
        with pytest.raises(MailboxesUnreachable) as unreachable:
            coordinator.submit(tmp_path / "after-rotation.yaml")
        lines = str(unreachable.value).splitlines()[1:]
        assert [line.split(":")[0].strip() for line in lines] == [
            f"node '{node}'" for node in node_ids
        ]
        assert all("host key CHANGED" in line and "refusing to connect" in line for line in lines)
        assert coordinator.ledger.study_ids() == ["before-rotation"]
        for node in node_ids:
            inbox = Path(boxes.node_side[node]["path"]) / "inbox"
            assert len(list(inbox.iterdir())) == 1  # the first study's task only
        collection = coordinator.collect("before-rotation")  # and nothing is read either
        assert collection.released == [] and collection.meta_files == []
