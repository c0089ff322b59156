"""Entry points of the Hail pipeline steps (`federation step qc|allele-freq|gwas`).

Each step is one job with one Hail session. Steps read the node and study configs, check
the inputs before starting the JVM, and write node-private outputs atomically: a failed
step leaves nothing that a later step or a rerun could mistake for a result.
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import asdict
from pathlib import Path

import hail as hl

from federation.analyses.allele_freq import allele_frequencies
from federation.analyses.export import export_private_table
from federation.analyses.genotypes import load_genotypes
from federation.analyses.gwas import (
    GwasDesign,
    analysis_samples,
    count_exclusions,
    principal_components,
    run_gwas,
)
from federation.analyses.nocalls import write_no_call_profiles
from federation.analyses.qc import QcCounts, imported_genotypes, read_qc_cohort, run_qc
from federation.analyses.reference import check_reference
from federation.analyses.session import HailSettings, hail_session
from federation.audit import append_event
from federation.files import atomic_path, atomic_write, atomic_write_json
from federation.pipeline.phenotypes import study_phenotypes
from federation.pipeline.preflight import check_node_inputs
from federation.release.gate import audit_log_of
from federation.settings import NodeSettings
from federation.spec import GwasAnalysis, StudySpec, TraitType

NO_CALL_PROFILE_SUFFIX = ".nocalls.json"  # beside the cohort file; release/tables.py reads it


def _hail_settings(node: NodeSettings, work_dir: Path) -> HailSettings:
    tmp = node.hail.tmp_dir or work_dir / "hail-tmp"
    return HailSettings(
        master=node.hail.master,
        driver_memory=node.hail.driver_memory,
        executor_memory=node.hail.executor_memory,
        executor_cores=node.hail.executor_cores,
        tmp_dir=str(tmp),
        log_path=str(work_dir / "hail.log"),
        reference_genome=node.reference_genome,
    )


def open_session(node: NodeSettings, work_dir: Path) -> None:
    """Start this process's Hail session for `node` now (the shared driver, ahead of its first
    step): the steps' own `hail_session` calls then reuse it (Hail starts once per process)."""
    with hail_session(_hail_settings(node, work_dir), stop_at_end=False):
        pass


def _replace_directory(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)


def _write_samples(mt: hl.MatrixTable, path: Path | None) -> None:
    """The analysed cohort's sample IDs, one per line, for the release step's privacy ledger.
    Node-private (mode 0600, under the work dir); it never goes near the release folder."""
    if path is None:
        return
    atomic_write(path, "".join(f"{sample}\n" for sample in mt.s.collect()), mode=0o600)


def qc_step(
    node: NodeSettings,
    study: StudySpec,
    out_mt: Path,
    counts_path: Path,
    samples_path: Path | None = None,
) -> None:
    """Import, check and QC the genotypes into the QC'd cohort directory `out_mt`
    (`analyses.qc`: the genotypes written once, with the kept samples and variants)."""
    check_node_inputs(node, study)
    phenotypes = study_phenotypes(node.phenotypes, node.phenotype_coding, study)
    work_dir = out_mt.parent
    tmp = out_mt.with_name(".partial-" + out_mt.name)
    with hail_session(_hail_settings(node, work_dir), stop_at_end=False):
        mt = load_genotypes(node)
        check_reference(mt, node)  # before any analysis: the declared build must fit
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        mt, counts = run_qc(mt, phenotypes, study.qc, node.kinship_max, store=tmp)
        _audit_relatedness(node, study, counts)
        _write_samples(mt, samples_path)  # columns only: cheap
    _replace_directory(tmp, out_mt)
    atomic_write_json(counts_path, counts.as_dict())


def _audit_relatedness(node: NodeSettings, study: StudySpec, counts: QcCounts) -> None:
    """The kinship step's outcome in the node's audit log: whether it ran, and if not why
    (disabled by the study, or too few variants for the cohort), with what it removed."""
    append_event(
        audit_log_of(node),
        "relatedness",
        node_id=node.node_id,
        study_id=study.study_id,
        status=counts.relatedness,
        method=counts.relatedness_method,
        kinship_max=counts.kinship_max,
        kinship_variants=counts.kinship_variants,
        min_kinship_variants=counts.min_kinship_variants,
        samples_related=counts.samples_related,
    )


def allele_frequency_step(node: NodeSettings, qc_mt: Path, out: Path) -> None:
    with hail_session(_hail_settings(node, out.parent), stop_at_end=False):
        export_private_table(allele_frequencies(read_qc_cohort(qc_mt)), out)


def gwas_step(
    node: NodeSettings,
    study: StudySpec,
    analysis: GwasAnalysis,
    qc_mt: Path,
    out: Path,
    design_path: Path,
    samples_path: Path | None = None,
) -> None:
    check_node_inputs(node, study)
    with hail_session(_hail_settings(node, out.parent), stop_at_end=False):
        mt = read_qc_cohort(qc_mt)
        pcs = None
        if analysis.principal_components:
            pcs = principal_components(mt, analysis.principal_components, study.pca).persist()
        exclusions = count_exclusions(mt, analysis)
        qc_samples = set(mt.s.collect())
        mt = analysis_samples(mt, analysis, pcs)
        _write_samples(mt, samples_path)
        analysed = set(mt.s.collect())
        if samples_path is not None:
            profiles = samples_path.with_suffix(NO_CALL_PROFILE_SUFFIX)
            write_no_call_profiles(
                lambda: imported_genotypes(qc_mt), qc_samples - analysed, profiles
            )
        if analysed:
            fit, design = run_gwas(mt, analysis)
            export_private_table(fit, out)
        else:
            design = _no_samples(analysis)
            _write_empty_table(out)
    atomic_write_json(
        design_path, {"analysis": analysis.id, **asdict(design), **asdict(exclusions)}
    )


def _no_samples(analysis: GwasAnalysis) -> GwasDesign:
    """The design of an analysis no sample could enter (the release refuses it: no_usable_data)."""
    binary = analysis.trait_type is TraitType.BINARY
    return GwasDesign(0, 0 if binary else None, 0 if binary else None, 0)


def _write_empty_table(out: Path) -> None:
    """A private table with no rows (nothing was fitted); the release refuses it unread."""
    with atomic_path(out) as tmp, gzip.open(tmp, "wt") as handle:
        handle.write("")
