"""Synthetic national genotypes: Hail's Balding-Nichols model, laid out on GRCh38 autosomes.

`hl.balding_nichols_model` gives each variant an ancestral allele frequency and, per
population (one per node), a drifted frequency Beta(p(1-F)/F, (1-p)(1-F)/F). It assigns
samples to populations at random, though, so node sizes would be random too; the calls
are therefore redrawn with the model's own formula (HWE from the node's frequency) for a
fixed sample-to-node assignment. Balding-Nichols puts every variant on chr1 with alleles
A/C; the caller's layout (`GenotypeDesign`) moves them onto chr1-22 with real alleles.
The model's `C` (allele index 1) becomes the alternate allele, so `af` is the ALT frequency.

Sex chromosomes are drawn like autosomes and then made to fit the sample's sex on export:
a male's non-PAR chrX genotype becomes hemizygous (one of his two drawn alleles, chosen by a
parity of sample and variant index, so ALT with probability p), written as a homozygous diploid call
as PLINK 1 stores it; chrY is male-only (females missing) and MT homoplasmic. Imputed
exports mix each true genotype with the node's Hardy-Weinberg prior by the variant's
accuracy a: GP = a * onehot(genotype) + (1 - a) * prior (for hemizygous males the prior is
on 0 and 2 copies), DS = GP1 + 2 GP2 rounded to 1/16384, the grid plink2 stores dosages on,
so plink2 and Hail read identical dosages from the VCF.

Everything random is keyed by the run's seed, so a seed gives the same bytes on every run.
The cohort is generated once, checkpointed, and each node is exported from the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hail as hl
import numpy as np

from federation.analyses.session import HailSettings, hail_session
from federation.analyses.sex_chromosomes import in_x_nonpar
from federation.errors import PipelineError

# Ancestral ALT frequencies: mostly common variants (what survives a GWAS array's QC), with a
# tail below 5% so MAF and minor-allele-count filters have something to remove.
ANCESTRAL_AF_RANGE = (0.02, 0.98)
REFERENCE_GENOME = "GRCh38"
DOSAGE_GRID = 16384  # plink2 stores dosages as multiples of 1/16384


@dataclass(frozen=True, eq=False)
class GenotypeDesign:
    """Everything the Hail side needs; arrays are per variant (in genomic order) or per sample."""

    seed: int
    node_sizes: tuple[int, ...]
    node_fst: tuple[float, ...]
    sample_ids: tuple[str, ...]  # all nodes, in node order
    contigs: tuple[str, ...]  # Hail GRCh38 names: "chr1"..."chr22"
    positions: tuple[int, ...]
    refs: tuple[str, ...]
    alts: tuple[str, ...]
    variant_ids: tuple[str, ...]  # chr:pos:ref:alt without the "chr" prefix (GWAS-SSF)
    missing_rate: float
    low_call_rate_samples: frozenset[int]  # sample indices with `low_call_missing_rate`
    low_call_rate_variants: frozenset[int]  # variant indices with `low_call_missing_rate`
    low_call_missing_rate: float
    imputation_accuracy: tuple[float, ...] | None = None  # per variant: write imputed files

    @property
    def node_of_sample(self) -> list[int]:
        return [node for node, size in enumerate(self.node_sizes) for _ in range(size)]


class SyntheticGenotypes:
    """A generated cohort (all nodes) in a running Hail session; see `synthetic_genotypes`."""

    def __init__(self, design: GenotypeDesign, mt: hl.MatrixTable) -> None:
        self.design = design
        self._mt = mt

    def allele_frequencies(self) -> tuple[np.ndarray, np.ndarray]:
        """ALT frequencies: ancestral (variants,) and per node (variants, nodes), genomic order."""
        rows = self._mt.rows().select("variant_index", "ancestral_af", "af").collect()
        rows.sort(key=lambda row: row.variant_index)
        ancestral = np.array([row.ancestral_af for row in rows], dtype=float)
        per_node = np.array([row.af for row in rows], dtype=float)
        return ancestral, per_node.reshape(len(rows), len(self.design.node_sizes))

    def alt_dosages(self, variant_indices: Sequence[int]) -> np.ndarray:
        """True ALT counts (samples, len(variant_indices)) before any call is set missing."""
        wanted = hl.literal(set(variant_indices), hl.tset(hl.tint64))
        mt = self._mt.filter_rows(wanted.contains(self._mt.variant_index))
        mt = mt.select_entries(dosage=mt.true_GT.n_alt_alleles())
        rows = mt.localize_entries("entries").collect()
        by_index = {row.variant_index: [entry.dosage for entry in row.entries] for row in rows}
        return np.array([by_index[index] for index in variant_indices], dtype=float).T

    def export_node(self, node_index: int, directory: Path, is_female: Sequence[bool]) -> None:
        """Write `genotypes.vcf.bgz` (+ .tbi) and `genotypes.bed/.bim/.fam` for one node, and
        with imputation accuracies `genotypes.imputed.vcf.bgz` and `genotypes.bgen/.sample`.

        `is_female` has one entry per sample of the whole cohort (PLINK's .fam records sex).
        """
        mt = self._mt.filter_cols(self._mt.node == node_index)
        female = hl.literal(list(is_female), hl.tarray(hl.tbool))
        mt = mt.annotate_cols(female=female[mt.sample_idx])
        mt = mt.annotate_entries(true_GT=_fit_to_sex(mt))
        mt = mt.select_entries(GT=hl.or_missing(~mt.call_missing, mt.true_GT))
        directory.mkdir(parents=True, exist_ok=True)
        if self.design.imputation_accuracy is not None:
            _export_imputed(mt, self.design.imputation_accuracy, directory)
        vcf = mt.select_rows(rsid=mt.variant_id).select_cols()
        hl.export_vcf(vcf, str(directory / "genotypes.vcf.bgz"), tabix=True)
        hl.export_plink(
            mt,
            str(directory / "genotypes"),
            ind_id=mt.s,
            is_female=mt.female,
            varid=mt.variant_id,
        )
        # Hadoop's local file system leaves .crc checksum files; they are not part of the cohort.
        for checksum in directory.glob(".*.crc"):
            checksum.unlink()


def _fit_to_sex(mt: hl.MatrixTable) -> hl.CallExpression:
    """Hemizygous males on non-PAR chrX (as a homozygous call), chrY male-only, MT homoplasmic."""
    gt = mt.true_GT
    # One of a heterozygote's two alleles, by the parity of variant and sample index: fixed
    # for a seed, unrelated to the genotype, so ALT with probability 1/2.
    alternate = (mt.variant_index + mt.sample_idx) % 2 == 0
    keep_alt = hl.if_else(gt.is_het(), alternate, gt.is_hom_var())
    homozygous = hl.if_else(keep_alt, hl.call(1, 1), hl.call(0, 0))
    return (
        hl.case()
        .when(in_x_nonpar(mt.locus) & ~mt.female, homozygous)
        .when(mt.locus.contig == "chrY", hl.or_missing(~mt.female, homozygous))
        .when(mt.locus.contig == "chrM", homozygous)
        .default(gt)
    )


def _export_imputed(mt: hl.MatrixTable, accuracy: Sequence[float], directory: Path) -> None:
    """GT:DS:GP VCF with INFO/R2 (the accuracy squared, what MaCH r² estimates here) and a
    BGEN 1.2 (8-bit GP, as Hail writes it) with its .sample."""
    mt = mt.annotate_rows(
        accuracy=hl.literal(list(accuracy), hl.tarray(hl.tfloat64))[hl.int32(mt.variant_index)]
    )
    a = mt.accuracy
    p = mt.af[mt.node]
    hemizygous = in_x_nonpar(mt.locus) & ~mt.female
    prior = hl.if_else(
        hemizygous | (mt.locus.contig == "chrY") | (mt.locus.contig == "chrM"),
        hl.array([1 - p, 0.0, p]),
        hl.array([(1 - p) ** 2, 2 * p * (1 - p), p**2]),
    )
    truth = hl.range(3).map(lambda k: hl.float64(mt.GT.n_alt_alleles() == k))
    gp = hl.or_missing(
        hl.is_defined(mt.GT), hl.range(3).map(lambda k: a * truth[k] + (1 - a) * prior[k])
    )
    mt = mt.annotate_entries(GP=gp)
    mt = mt.annotate_entries(
        DS=hl.floor((mt.GP[1] + 2 * mt.GP[2]) * DOSAGE_GRID + 0.5) / DOSAGE_GRID
    )
    # R2 with 4 decimals, as minimac writes it.
    vcf = mt.select_rows(
        rsid=mt.variant_id,
        info=hl.struct(R2=hl.float64(hl.format("%.4f", mt.accuracy * mt.accuracy))),
    )
    hl.export_vcf(
        vcf.select_cols().select_entries("GT", "DS", "GP"),
        str(directory / "genotypes.imputed.vcf.bgz"),
        tabix=True,
    )
    bgen = mt.select_cols()
    hl.export_bgen(bgen, str(directory / "genotypes"), gp=bgen.GP, varid=bgen.variant_id)


def _pin_randomness(seed: int) -> None:
    """Make every random draw below a function of `seed` alone.

    Hail's draws depend on the session nonce (`global_seed` at init) and on a counter of
    random expressions built so far; the counter is reset here. A session that was already
    running with another seed would silently give other data, so that is refused.
    """
    nonce = hl._get_flags("rng_nonce").get("rng_nonce")
    if nonce != hex(seed):
        raise PipelineError(
            f"synth: the Hail session was started with rng_nonce={nonce}, not seed {seed}; "
            "run synth in its own session (HailSettings(global_seed=seed))"
        )
    hl.reset_global_randomness()


def _balding_nichols_cohort(design: GenotypeDesign) -> hl.MatrixTable:
    n_samples = len(design.sample_ids)
    n_variants = len(design.variant_ids)
    mt = hl.balding_nichols_model(
        n_populations=len(design.node_sizes),
        n_samples=n_samples,
        n_variants=n_variants,
        pop_dist=list(design.node_sizes),
        fst=list(design.node_fst),
        af_dist=hl.rand_unif(*ANCESTRAL_AF_RANGE),
        reference_genome=REFERENCE_GENOME,
    )
    mt = mt.annotate_cols(
        node=hl.literal(design.node_of_sample, hl.tarray(hl.tint32))[mt.sample_idx],
        s=hl.literal(list(design.sample_ids), hl.tarray(hl.tstr))[mt.sample_idx],
    )
    # The Balding-Nichols genotype draw, with the node fixed instead of drawn per sample.
    p = mt.af[mt.node]
    q = 1 - p
    mt = mt.select_entries(
        true_GT=hl.unphased_diploid_gt_index_call(hl.rand_cat([q**2, 2 * p * q, p**2]))
    )
    return mt.add_row_index("variant_index")


def _relocate_variants(mt: hl.MatrixTable, design: GenotypeDesign) -> hl.MatrixTable:
    """Move variant i to the design's i-th locus and alleles (both in genomic order)."""
    at = hl.int32(mt.variant_index)
    contigs = hl.literal(list(design.contigs), hl.tarray(hl.tstr))
    positions = hl.literal(list(design.positions), hl.tarray(hl.tint32))
    refs = hl.literal(list(design.refs), hl.tarray(hl.tstr))
    alts = hl.literal(list(design.alts), hl.tarray(hl.tstr))
    variant_ids = hl.literal(list(design.variant_ids), hl.tarray(hl.tstr))
    # The new keys are already sorted, so Hail re-keys without a shuffle.
    mt = mt.key_rows_by(
        locus=hl.locus(contigs[at], positions[at], reference_genome=REFERENCE_GENOME),
        alleles=hl.array([refs[at], alts[at]]),
    )
    mt = mt.annotate_rows(variant_id=variant_ids[hl.int32(mt.variant_index)])
    return mt.key_cols_by("s")


def _with_missing_calls(mt: hl.MatrixTable, design: GenotypeDesign) -> hl.MatrixTable:
    """Flag calls to withhold: `missing_rate` everywhere, more on low-call-rate rows/columns."""
    if design.missing_rate == 0 and not (
        design.low_call_rate_samples or design.low_call_rate_variants
    ):
        return mt.annotate_entries(call_missing=False)
    low_samples = hl.literal(set(design.low_call_rate_samples), hl.tset(hl.tint32))
    low_variants = hl.literal(set(design.low_call_rate_variants), hl.tset(hl.tint64))
    on_low_call_rate = low_samples.contains(mt.sample_idx) | low_variants.contains(mt.variant_index)
    low_rate = max(design.low_call_missing_rate, design.missing_rate)
    return mt.annotate_entries(
        call_missing=hl.rand_bool(hl.if_else(on_low_call_rate, low_rate, design.missing_rate))
    )


@contextmanager
def synthetic_genotypes(design: GenotypeDesign, work_dir: Path) -> Iterator[SyntheticGenotypes]:
    """Start one Hail session seeded with `design.seed`, generate all nodes, yield the cohort.

    `work_dir` holds Hail's temporary files, log and the checkpoint; the caller removes it.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    settings = HailSettings(
        tmp_dir=str(work_dir / "tmp"),
        log_path=str(work_dir / "hail.log"),
        reference_genome=REFERENCE_GENOME,
        global_seed=design.seed,
    )
    with hail_session(settings):
        _pin_randomness(design.seed)
        mt = _balding_nichols_cohort(design)
        mt = _relocate_variants(mt, design)
        mt = _with_missing_calls(mt, design)
        mt = mt.select_rows("variant_index", "variant_id", "ancestral_af", "af")
        mt = mt.select_cols("sample_idx", "node")
        mt = mt.checkpoint(str(work_dir / "cohort.mt"))
        yield SyntheticGenotypes(design, mt)
