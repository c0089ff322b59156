"""Relatedness on a node's QC'd cohort: KING-robust kinship, then a maximal independent set.

Related samples (duplicates, first- and second-degree relatives) are not independent
observations: left in, they inflate association statistics and double-count alleles. The
node estimates pairwise kinship with KING-robust (Manichaikul et al. 2010, Bioinformatics
26:2867; Hail's `hl.king`) on common autosomal variants of the samples that passed sample
QC, links every pair above the threshold, and removes the fewest samples that leave no
linked pair (Hail's `maximal_independent_set`). Population structure is not handled here:
the GWAS adjusts for it with node-computed principal components.

Too few variants make kinship noise: on M independent common variants the KING-robust
estimate of an unrelated pair scatters with SD ~ KING_NOISE_SD / sqrt(M), and a cohort of n
samples has n(n-1)/2 pairs to scatter. Below `min_kinship_variants(n, kinship_max)` variants
an unrelated pair would be expected to cross the threshold by chance (an unrelated
1,000-sample cohort on ~1,600 common variants had one "second-degree" pair), so the step is
skipped, never silently: the status says why, in the QC counts, the sidecars and the audit log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import hail as hl
import numpy as np

from federation.analyses.thinning import keep_fraction_of_loci
from federation.errors import PipelineError
from federation.stats.kinship import KingCounts, bed_codes, pairs_above

METHOD = "king_robust"
# KING-robust is estimated on common, well-called autosomal variants (its het/hom balance is
# noisy on rare ones), thinned by hash of the locus like the PCs to `kinship_variant_budget`.
MIN_MAF = 0.05
MIN_CALL_RATE = 0.95
# KING's cost grows with samples^2 x variants, its precision only with sqrt(variants): 20,000
# variants put noise at SD ~0.007, so the second-degree threshold 0.0884 sits ~12 SD above an
# unrelated pair, more than even 10^6 samples need (`min_kinship_variants`: 6,911). At 5,000
# samples x 100,000 variants the estimate on every common variant dominated the node's QC.
KINSHIP_VARIANTS = 20_000
# Above the minimum the budget keeps this factor, halving the noise SD of the bare minimum
# (lower thresholds or larger cohorts raise the minimum, and with it the budget).
KINSHIP_NOISE_MARGIN = 4
# SD x sqrt(M) of Hail's KING-robust kinship (between-family estimator) over the unrelated
# pairs of a simulated cohort: 0.95-0.98 for 1,000 samples in Hardy-Weinberg equilibrium, ALT
# frequencies uniform on 0.05-0.95, M = 1,000-8,000 independent variants; rounded up.
KING_NOISE_SD = 1.0
# Unrelated pairs the node accepts to see called related by noise alone (expected number,
# Gaussian tail of the estimate: conservative, the simulated maxima sat ~0.6 SD below it).
MAX_EXPECTED_NOISE_PAIRS = 0.05
DONE = "done"
DISABLED = "disabled by study"
# hl.king's three samples x samples products run one Spark task per result block, and Hail's
# default block (4,096) makes a cohort of up to 4,096 samples one block: one task on one core,
# whatever the node has. Cutting the samples into at least KINSHIP_SAMPLE_SPLITS blocks gives
# the products KINSHIP_SAMPLE_SPLITS^2 tasks (16, enough for the cores of a node that runs Hail
# on one machine), never larger than Hail's default nor smaller than MIN_KINSHIP_BLOCK_SIZE,
# below which per-task overhead outweighs the work. The products sum 0/1 indicators (exact in
# double precision in any order), so the kinship does not depend on the block size.
KINSHIP_SAMPLE_SPLITS = 4
MIN_KINSHIP_BLOCK_SIZE = 256
MAX_KINSHIP_BLOCK_SIZE = 4_096  # hl.linalg.BlockMatrix.default_block_size()
# Up to this many samples the three products are computed on the node's host with NumPy
# (`stats.kinship`: the same doubles as hl.king, in seconds where Hail's Java linear algebra
# takes minutes: 175-484 s per product at 5,000 samples). Their three n x n float32 count
# matrices take 12 n^2 bytes: 4.8 GB at 20,000 samples. Larger cohorts use hl.king, whose
# block matrices spread over the Spark cluster.
LOCAL_KINSHIP_MAX_SAMPLES = 20_000
# Variants of the .bed turned into indicator matrices at a time (4 float32 matrices of
# chunk x samples: 160 MB at 20,000 samples).
KINSHIP_CHUNK_VARIANTS = 512
PLINK_BED_MAGIC = b"\x6c\x1b\x01"  # PLINK 1 .bed, variant-major: what hl.export_plink writes


@dataclass(frozen=True)
class RelatednessResult:
    method: str
    kinship_max: float | None  # None: not estimated (disabled by the study, or skipped)
    related_pairs: int
    samples_removed: int
    status: str = DONE  # DONE, DISABLED, or "skipped: <reason>"
    kinship_variants: int | None = None  # variants the estimate used (or would have)
    min_kinship_variants: int | None = None  # what this cohort and threshold need


def min_kinship_variants(n_samples: int, kinship_max: float) -> int:
    """Fewest independent common variants at which noise alone is expected to put fewer than
    MAX_EXPECTED_NOISE_PAIRS of the cohort's unrelated pairs above `kinship_max`:
    M = (z * KING_NOISE_SD / kinship_max)^2, z the normal quantile of that tail per pair.
    (At 0.0884: 3,460 variants for 1,000 samples, 5,755 for 100,000.)"""
    pairs = n_samples * (n_samples - 1) / 2
    if pairs <= MAX_EXPECTED_NOISE_PAIRS:
        return 0
    z = -NormalDist().inv_cdf(MAX_EXPECTED_NOISE_PAIRS / pairs)
    return math.ceil((max(z, 0.0) * KING_NOISE_SD / kinship_max) ** 2)


def too_few_variants(n_variants: int, n_samples: int, kinship_max: float) -> str | None:
    """The reason the estimate is skipped, or None when `n_variants` suffice."""
    needed = min_kinship_variants(n_samples, kinship_max)
    if n_variants >= needed:
        return None
    return (
        f"skipped: {n_variants:,} common autosomal variants, fewer than the {needed:,} that tell "
        f"kinship {kinship_max:g} from noise in a cohort of this size"
    )


def kinship_variant_budget(needed: int) -> int:
    """How many variants the estimate keeps at most, given the minimum it `needed`."""
    return max(KINSHIP_VARIANTS, KINSHIP_NOISE_MARGIN * needed)


def kinship_block_size(n_samples: int) -> int:
    """The block size for `hl.king` on `n_samples` samples (see KINSHIP_SAMPLE_SPLITS)."""
    split = math.ceil(n_samples / KINSHIP_SAMPLE_SPLITS)
    return min(MAX_KINSHIP_BLOCK_SIZE, max(MIN_KINSHIP_BLOCK_SIZE, split))


def kinship_variants(mt: hl.MatrixTable, budget: int) -> tuple[hl.MatrixTable, int]:
    """Common, well-called autosomal biallelic variants of `mt` for the kinship estimate, thinned
    to about `budget` of them, and how many there were before thinning."""
    autosomal = hl.variant_qc(mt.filter_rows(mt.locus.in_autosome()))
    stats = autosomal.variant_qc
    autosomal = autosomal.filter_rows(
        (stats.call_rate >= MIN_CALL_RATE) & (hl.min(stats.AF) >= MIN_MAF)
    ).drop("variant_qc")
    n_variants = autosomal.count_rows()
    if n_variants > budget:
        autosomal = autosomal.filter_rows(
            keep_fraction_of_loci(autosomal.locus, budget / n_variants)
        )
    return autosomal, n_variants


def related_pairs(variants: hl.MatrixTable, kinship_max: float, n_samples: int) -> hl.Table:
    """Pairs (i, j) of distinct samples whose KING-robust kinship on `variants` (from
    `kinship_variants`, `n_samples` columns) exceeds `kinship_max`."""
    genotypes = variants.select_globals().select_rows().select_cols().select_entries("GT")
    if n_samples <= LOCAL_KINSHIP_MAX_SAMPLES:  # one pass over the cohort's pipeline
        return _related_pairs_on_host(genotypes, kinship_max)
    # hl.king builds four indicator block matrices, each a full pass over its input. Over the
    # cohort's pipeline (variant QC, the common-variant filter, thinning) each pass took ~60 s
    # at 5,000 x 100,000 on 2 cores, more than the products themselves; over a checkpoint of
    # just the kept genotypes (in Hail's temporary directory, inside the work directory) each
    # pass reads a fifth of them.
    genotypes = genotypes.checkpoint(hl.utils.new_temp_file("kinship-genotypes", "mt"))
    return king_pairs_above(
        hl.king(genotypes.GT, block_size=kinship_block_size(n_samples)), kinship_max
    )


def king_pairs_above(kinship: hl.MatrixTable, kinship_max: float) -> hl.Table:
    """The pairs (i, j), i < j, of `hl.king`'s result whose phi exceeds `kinship_max`."""
    pairs = kinship.filter_entries(
        (kinship.s_1 < kinship.s) & (kinship.phi > kinship_max)
    ).entries()
    pairs = pairs.key_by()
    return pairs.select(i=pairs.s_1, j=pairs.s)


def host_king_counts(genotypes: hl.MatrixTable) -> tuple[list[str], KingCounts]:
    """The sample IDs (column order) and KING's three products of `genotypes`' GT, computed on
    this host: the genotypes go through a PLINK .bed in Hail's temporary directory (2 bits a
    genotype, inside the work directory, deleted once read), read in chunks. The .fam's IDs are
    column numbers, so no sample ID has to be a valid PLINK ID, and they prove the order."""
    sample_ids = genotypes.s.collect()
    prefix = _local_path(hl.utils.new_temp_file("kinship-genotypes", "plink"))
    indexed = genotypes.add_col_index("kinship_column")
    hl.export_plink(indexed, prefix, ind_id=hl.str(indexed.kinship_column))
    files = [Path(f"{prefix}.{suffix}") for suffix in ("bed", "bim", "fam")]
    try:
        columns = [line.split()[1] for line in files[2].read_text().splitlines()]
        if columns != [str(column) for column in range(len(sample_ids))]:
            raise PipelineError(f"'{files[2]}' does not list the kinship samples in column order")
        counts = KingCounts.empty(len(sample_ids))
        bytes_per_variant = (len(sample_ids) + 3) // 4
        with open(files[0], "rb") as bed:
            if bed.read(len(PLINK_BED_MAGIC)) != PLINK_BED_MAGIC:
                raise PipelineError(f"'{files[0]}' is not a variant-major PLINK 1 .bed")
            while chunk := bed.read(bytes_per_variant * KINSHIP_CHUNK_VARIANTS):
                packed = np.frombuffer(chunk, dtype=np.uint8).reshape(-1, bytes_per_variant)
                counts.add(bed_codes(packed, len(sample_ids)))
    finally:
        for path in files:
            path.unlink(missing_ok=True)
    return sample_ids, counts


def _related_pairs_on_host(genotypes: hl.MatrixTable, kinship_max: float) -> hl.Table:
    """`related_pairs` with KING's products on this host (`host_king_counts`)."""
    sample_ids, counts = host_king_counts(genotypes)
    pairs = pairs_above(counts, sample_ids, kinship_max)
    return hl.Table.parallelize(
        [{"i": i, "j": j} for i, j in pairs], hl.tstruct(i=hl.tstr, j=hl.tstr)
    )


def _local_path(path: str) -> str:
    """A path of Hail's temporary directory as this host opens it (a site's shared file system;
    Hail may name it as a file: URL)."""
    return path.removeprefix("file://").removeprefix("file:")


def remove_related(
    mt: hl.MatrixTable, kinship_max: float
) -> tuple[hl.MatrixTable, RelatednessResult]:
    """`mt` without one sample of each related pair: the complement of a maximal independent
    set of the relatedness graph (no two kept samples related above `kinship_max`). With too
    few variants for the cohort's size (`too_few_variants`) nothing is removed and the result
    says why."""
    n_samples = mt.count_cols()
    needed = min_kinship_variants(n_samples, kinship_max)
    variants, n_variants = kinship_variants(mt, kinship_variant_budget(needed))
    skipped = too_few_variants(n_variants, n_samples, kinship_max)
    if skipped is not None:
        return mt, RelatednessResult("none", None, 0, 0, skipped, n_variants, needed)
    pairs = related_pairs(variants, kinship_max, n_samples)
    pairs = pairs.checkpoint(hl.utils.new_temp_file("related", "ht"))
    n_pairs = pairs.count()
    removed = 0
    if n_pairs:
        drop = hl.maximal_independent_set(pairs.i, pairs.j, keep=False)
        drop = drop.key_by(s=drop.node)
        removed = drop.count()
        mt = mt.filter_cols(hl.is_missing(drop[mt.s]))
    return mt, RelatednessResult(METHOD, kinship_max, n_pairs, removed, DONE, n_variants, needed)


def not_estimated() -> RelatednessResult:
    return RelatednessResult("none", None, 0, 0, DISABLED)
