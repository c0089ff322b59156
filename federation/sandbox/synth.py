"""Synthetic national cohorts with planted causal variants (`federation synth`).

One Balding-Nichols population per node (Hail, `analyses/synth_genotypes.py`), laid out over
GRCh38 autosomes in proportion to their lengths, with real A/C/G/T alleles. On request a
cohort also has chrX variants (some in each pseudo-autosomal region, males hemizygous
outside them) and a few chrY and MT ones, and/or imputed genotypes: each variant gets an
imputation accuracy, and the dosages and genotype probabilities written beside the hard
calls (a VCF with GT:DS:GP and INFO/R2, and a BGEN with its .sample) mix the true genotype
with the node's Hardy-Weinberg prior by that accuracy. Phenotypes are
simulated here with numpy: a quantitative and a binary trait driven by a few causal
variants, age and sex. `truth.json` records what was planted so every later stage can be
checked against it.

Everything is written to a temporary directory next to the output and renamed into place
at the end, so a failed run leaves nothing behind. The same seed gives the same bytes.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from federation.errors import SpecError
from federation.versions import software_versions

if TYPE_CHECKING:  # the Hail side is imported only when a cohort is generated
    from federation.analyses.synth_genotypes import GenotypeDesign

# Country codes of 1+MG members, in the order nodes are named; a cohort has at most this many.
NODE_IDS = (
    "fi",
    "ee",
    "nl",
    "se",
    "pt",
    "es",
    "it",
    "de",
    "fr",
    "be",
    "dk",
    "no",
    "is",
    "ie",
    "at",
    "ch",
    "cz",
    "pl",
    "si",
    "hr",
    "gr",
    "cy",
    "lu",
    "lt",
    "lv",
    "hu",
    "sk",
    "bg",
    "ro",
    "mt",
)
# The requested size is the smallest node's (the planted power then holds in every node);
# the others are larger by these factors, as national cohorts differ in size.
NODE_SIZE_MULTIPLIERS = (1.0, 1.4, 1.2, 1.7, 1.1, 1.5, 1.3, 1.8)
# Drift of each node from the common ancestral population. European between-country Fst is
# ~0.001-0.01; these are larger so that ancestry differences are visible in the data.
NODE_FST = (0.01, 0.02, 0.03, 0.015, 0.04, 0.025, 0.05, 0.035)
GRCH38_AUTOSOME_LENGTHS = (
    248956422,
    242193529,
    198295559,
    190214555,
    181538259,
    170805979,
    159345973,
    145138636,
    138394717,
    133797422,
    135086622,
    133275309,
    114364328,
    107043718,
    101991189,
    90338345,
    83257441,
    80373285,
    58617616,
    64444167,
    46709983,
    50818468,
)
CHROMOSOME_END_MARGIN = 1_000_000  # loci stay off telomeres, well inside each contig
BASES = np.array(["A", "C", "G", "T"])
N_CAUSAL = 5
CAUSAL_ANCESTRAL_AF = (0.2, 0.5)  # common: every node has power
CAUSAL_NODE_AF = (0.2, 0.8)  # after drift too, so heterozygosity >= 2*0.2*0.8 everywhere
MIN_CAUSAL_HETEROZYGOSITY = 2 * 0.2 * 0.8
# Variance each causal variant explains in its weakest node, in units of the N(0,1) noise:
# beta = sqrt(0.10/H), H = 0.32..0.5 -> 0.45..0.56 per allele. With 1,000 samples the
# expected chi-square is ~70 (p < 5e-8 in a per-node linear GWAS with >99% probability).
QUANT_VARIANCE_PER_CAUSAL = 0.10
# The same on the logit scale: log-OR 0.63..0.79; a pooled logistic GWAS of 3,000 samples
# then has an expected chi-square of ~90 per causal variant.
BINARY_LOGIT_VARIANCE_PER_CAUSAL = 0.20
NOISE_SD = 1.0
AGE_RANGE = (30, 80)  # years, uniform, inclusive
AGE_CENTRE = 55  # age acts as (age - 55), so trait means stay near 0
# Covariate effects are real (age explains ~0.19 of the noise variance), so adjusting matters.
QUANT_COVARIATE_EFFECTS = {"age_per_year": 0.03, "sex_male": 0.5}
BINARY_COVARIATE_LOG_ORS = {"age_per_year": 0.04, "sex_male": 0.5}
BINARY_PREVALENCE = 0.4  # the intercept is solved for this: cases and controls everywhere
MIN_SAMPLES = 10  # fewer cannot fit a regression with covariates
MAX_MISSING_RATE = 0.2  # below LOW_CALL_MISSING_RATE, so QC can tell the two apart
# With --missing-rate > 0 a few samples and variants get LOW_CALL_MISSING_RATE, so call-rate
# QC (thresholds 0.95-0.98) has something to remove.
LOW_CALL_FRACTION = 0.005
LOW_CALL_MISSING_RATE = 0.25
# One numpy stream per purpose (seeded with [seed, stream]): one draw never shifts another.
STREAM_LAYOUT, STREAM_LOW_CALL, STREAM_CAUSAL, STREAM_PHENOTYPES = 1, 2, 3, 4
STREAM_SEX_CHROMOSOMES, STREAM_IMPUTATION = 5, 6
# Chromosomes after the autosomes, numbered on in the layout as Hail orders GRCh38 contigs.
OTHER_CHROMOSOMES = {23: "X", 24: "Y", 25: "MT"}
GRCH38_CONTIGS = {23: "chrX", 24: "chrY", 25: "chrM"}
# chrX variants: this share in PAR1 and PAR2 each (GRCh38, see federation.genome), the rest
# outside; chrY variants on its male-specific region; MT over its whole 16,569 bases.
PAR_SHARE = 0.15
GRCH38_X_NONPAR = (2_781_480, 155_701_382)
GRCH38_Y_MSY = (2_781_480, 56_887_902)
GRCH38_MT_LENGTH = 16_569
Y_AND_MT_VARIANTS = 5  # each: enough to show they are excluded
# Imputation accuracy per variant, uniform: MaCH r² of the written dosages is about its
# square (0.36-1), so an INFO floor of 0.3-0.9 has variants on both sides.
IMPUTATION_ACCURACY = (0.6, 1.0)


@dataclass(frozen=True, eq=False)
class VariantLayout:
    """Per variant, in genomic order: chromosome number (1-22), position, REF and ALT."""

    chromosomes: np.ndarray
    positions: np.ndarray
    refs: np.ndarray
    alts: np.ndarray

    def chromosome_names(self) -> list[str]:
        """Bare GWAS-SSF names: '1'..'22', 'X', 'Y', 'MT'."""
        return [OTHER_CHROMOSOMES.get(n, str(n)) for n in self.chromosomes.tolist()]

    def contigs(self) -> list[str]:
        """Hail's GRCh38 contig names: 'chr1'..'chr22', 'chrX', 'chrY', 'chrM'."""
        return [GRCH38_CONTIGS.get(n, f"chr{n}") for n in self.chromosomes.tolist()]

    def variant_ids(self) -> list[str]:
        """`chr:pos:ref:alt` with a bare chromosome name, as in GWAS-SSF."""
        columns = (
            self.chromosome_names(),
            *(c.tolist() for c in (self.positions, self.refs, self.alts)),
        )
        return [":".join(map(str, row)) for row in zip(*columns, strict=True)]


@dataclass(frozen=True)
class CausalVariant:
    chromosome: str  # bare number as in GWAS-SSF; the VCF contig is "chr" + this
    position: int
    ref: str
    alt: str  # the effect allele of both effects below
    variant_id: str
    ancestral_alt_af: float
    node_alt_af: dict[str, float]
    beta_quant_trait: float  # per ALT allele
    log_or_binary_trait: float  # per ALT allele


@dataclass(frozen=True, eq=False)
class Phenotypes:
    """One value per sample of the whole cohort, in node order."""

    age: np.ndarray
    sex: np.ndarray  # 0 female, 1 male
    quant_trait: np.ndarray
    binary_trait: np.ndarray  # 0 control, 1 case
    binary_intercept: float


@dataclass(frozen=True)
class NodeCohort:
    node_id: str
    n_samples: int
    fst: float
    directory: Path

    @property
    def vcf(self) -> Path:
        return self.directory / "genotypes.vcf.bgz"  # tabix index: + ".tbi"

    @property
    def plink_prefix(self) -> Path:
        return self.directory / "genotypes"  # + .bed/.bim/.fam, as PLINK's --bfile takes it

    @property
    def phenotypes(self) -> Path:
        return self.directory / "phenotypes.tsv"

    @property
    def imputed_vcf(self) -> Path:
        """With `imputed`: GT:DS:GP and INFO/R2 (+ .tbi)."""
        return self.directory / "genotypes.imputed.vcf.bgz"

    @property
    def bgen(self) -> Path:
        """With `imputed`: BGEN 1.2, 8-bit probabilities; its samples in `bgen_sample`."""
        return self.directory / "genotypes.bgen"

    @property
    def bgen_sample(self) -> Path:
        return self.directory / "genotypes.sample"


@dataclass(frozen=True)
class SynthResult:
    out_dir: Path
    seed: int
    n_variants: int
    nodes: tuple[NodeCohort, ...]
    causal_variants: tuple[CausalVariant, ...]
    truth: Path


def parse_sample_sizes(text: str) -> int | list[int]:
    """`--samples-per-node`: one number, or one per node separated by commas."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise SpecError(
            f"samples_per_node={text!r}: not a whole number or a comma-separated list of them; "
            "use e.g. --samples-per-node 1000 or 800,1200,1000"
        ) from None
    return sizes[0] if len(sizes) == 1 else sizes


def node_sample_sizes(samples_per_node: int | Sequence[int], nodes: int) -> tuple[int, ...]:
    """Checked sizes, one per node. Refuses what cannot be simulated, before any JVM starts."""
    if not 1 <= nodes <= len(NODE_IDS):
        raise SpecError(
            f"nodes={nodes}: need 1 to {len(NODE_IDS)} nodes; use --nodes 1..{len(NODE_IDS)}"
        )
    given = [int(n) for n in np.atleast_1d(samples_per_node)]
    if np.ndim(samples_per_node) == 0:  # one number: the smallest node's size
        factors = [NODE_SIZE_MULTIPLIERS[i % len(NODE_SIZE_MULTIPLIERS)] for i in range(nodes)]
        sizes = tuple(round(given[0] * factor) for factor in factors)
    elif len(given) != nodes:
        raise SpecError(
            f"samples_per_node={','.join(map(str, given))}: {len(given)} sizes for "
            f"nodes={nodes}; give one size, or one per node"
        )
    else:
        sizes = tuple(given)
    if min(sizes) < MIN_SAMPLES:
        raise SpecError(
            f"samples_per_node={min(sizes)}: a node needs at least {MIN_SAMPLES} samples; "
            f"use --samples-per-node {MIN_SAMPLES} or more"
        )
    return sizes


def check_request(variants: int, seed: int, missing_rate: float) -> None:
    if variants < N_CAUSAL:
        raise SpecError(
            f"variants={variants}: fewer than the {N_CAUSAL} planted causal variants; "
            f"use --variants {N_CAUSAL} or more"
        )
    if seed < 0:
        raise SpecError(f"seed={seed}: must be 0 or positive; use e.g. --seed 42")
    if not 0 <= missing_rate <= MAX_MISSING_RATE:
        raise SpecError(
            f"missing_rate={missing_rate}: must be between 0 and {MAX_MISSING_RATE}; "
            "use e.g. --missing-rate 0.01"
        )


def autosome_variant_counts(n_variants: int) -> np.ndarray:
    """Variants per autosome, proportional to GRCh38 length (largest remainder).

    With 22 or more variants every autosome gets at least one, so a cohort covers
    chromosomes 1-22; with fewer, the longest autosomes get one each.
    """
    lengths = np.array(GRCH38_AUTOSOME_LENGTHS, dtype=float)
    if n_variants < len(lengths):
        counts = np.zeros(len(lengths), dtype=int)
        counts[np.argsort(-lengths, kind="stable")[:n_variants]] = 1
        return counts
    share = (n_variants - len(lengths)) * lengths / lengths.sum()
    counts = np.floor(share).astype(int)
    by_remainder = np.argsort(-(share - counts), kind="stable")
    counts[by_remainder[: n_variants - len(lengths) - counts.sum()]] += 1
    return counts + 1


def variant_layout(n_variants: int, rng: np.random.Generator) -> VariantLayout:
    """Distinct sorted positions per autosome; REF and ALT drawn from A/C/G/T, REF != ALT."""
    chromosomes, positions = [], []
    counts = autosome_variant_counts(n_variants)
    for number, (length, count) in enumerate(
        zip(GRCH38_AUTOSOME_LENGTHS, counts, strict=True), start=1
    ):
        span = length - 2 * CHROMOSOME_END_MARGIN
        drawn = rng.choice(span, size=count, replace=False) + CHROMOSOME_END_MARGIN + 1
        positions.append(np.sort(drawn))
        chromosomes.append(np.full(count, number))
    ref_index = rng.integers(0, 4, size=n_variants)
    alt_index = (ref_index + rng.integers(1, 4, size=n_variants)) % 4
    return VariantLayout(
        chromosomes=np.concatenate(chromosomes),
        positions=np.concatenate(positions).astype(np.int64),
        refs=BASES[ref_index],
        alts=BASES[alt_index],
    )


def _sorted_positions(low: int, high: int, count: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(high - low + 1, size=count, replace=False) + low)


def sex_chromosome_layout(x_variants: int, rng: np.random.Generator) -> VariantLayout:
    """`x_variants` on chrX (PAR_SHARE in each PAR, at least one), Y_AND_MT_VARIANTS on chrY
    and MT each, in genomic order; alleles drawn as for the autosomes."""
    from federation.genome import PSEUDOAUTOSOMAL_REGIONS

    par1, par2 = PSEUDOAUTOSOMAL_REGIONS["GRCh38"]
    in_par = max(1, round(PAR_SHARE * x_variants))
    x_positions = np.sort(
        np.concatenate(
            [
                _sorted_positions(*par1, in_par, rng),
                _sorted_positions(*GRCH38_X_NONPAR, x_variants - 2 * in_par, rng),
                _sorted_positions(*par2, in_par, rng),
            ]
        )
    )
    positions = np.concatenate(
        [
            x_positions,
            _sorted_positions(*GRCH38_Y_MSY, Y_AND_MT_VARIANTS, rng),
            _sorted_positions(1, GRCH38_MT_LENGTH, Y_AND_MT_VARIANTS, rng),
        ]
    )
    chromosomes = np.repeat([23, 24, 25], [x_variants, Y_AND_MT_VARIANTS, Y_AND_MT_VARIANTS])
    ref_index = rng.integers(0, 4, size=len(positions))
    alt_index = (ref_index + rng.integers(1, 4, size=len(positions))) % 4
    return VariantLayout(
        chromosomes, positions.astype(np.int64), BASES[ref_index], BASES[alt_index]
    )


def joined_layout(first: VariantLayout, second: VariantLayout) -> VariantLayout:
    return VariantLayout(
        *(
            np.concatenate([getattr(first, name), getattr(second, name)])
            for name in ("chromosomes", "positions", "refs", "alts")
        )
    )


def is_palindromic(refs: np.ndarray, alts: np.ndarray) -> np.ndarray:
    """A/T and C/G SNPs, whose strand cannot be told from the alleles."""
    return np.isin(np.char.add(refs.astype(str), alts.astype(str)), ["AT", "TA", "CG", "GC"])


def low_call_rate_indices(
    sizes: Sequence[int], n_variants: int, missing_rate: float, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """Cohort-wide indices of low-call-rate samples (a few per node) and variants."""
    if missing_rate == 0:
        return [], []
    samples, start = [], 0
    for size in sizes:
        count = max(1, round(LOW_CALL_FRACTION * size))
        samples += sorted((start + rng.choice(size, size=count, replace=False)).tolist())
        start += size
    count = min(max(1, round(LOW_CALL_FRACTION * n_variants)), n_variants - N_CAUSAL)
    return samples, sorted(rng.choice(n_variants, size=count, replace=False).tolist())


def choose_causal_variants(
    layout: VariantLayout,
    ancestral_af: np.ndarray,
    node_af: np.ndarray,
    excluded: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sorted indices of N_CAUSAL variants, one per chromosome, common in every node.

    Palindromic SNPs are avoided (harmonisation may drop them near MAF 0.5, and a planted
    variant must reach the meta-analysis); `excluded` (low call rate) ones are never chosen.
    If too few qualify (tiny cohorts), the most heterozygous others fill in.
    """
    in_range = (node_af >= CAUSAL_NODE_AF[0]) & (node_af <= CAUSAL_NODE_AF[1])
    eligible = (
        (ancestral_af >= CAUSAL_ANCESTRAL_AF[0])
        & (ancestral_af <= CAUSAL_ANCESTRAL_AF[1])
        & in_range.all(axis=1)
        & ~is_palindromic(layout.refs, layout.alts)
        & ~excluded
    )
    heterozygosity = np.min(2 * node_af * (1 - node_af), axis=1)
    # Eligible ones first in random order, then the rest by heterozygosity; excluded never.
    tiebreak = np.where(eligible, rng.random(len(eligible)), heterozygosity)
    order = [int(i) for i in np.lexsort((-tiebreak, ~eligible)) if not excluded[i]]
    chosen: list[int] = []
    for one_per_chromosome in (True, False):
        for index in order:
            used = {int(layout.chromosomes[i]) for i in chosen} if one_per_chromosome else set()
            if len(chosen) == N_CAUSAL:
                break
            if index not in chosen and int(layout.chromosomes[index]) not in used:
                chosen.append(index)
    return np.sort(np.array(chosen, dtype=int))


def causal_effects(node_af: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-ALT-allele beta (quant) and log-OR (binary) for causal variants (rows of node_af).

    Sized on the weakest node's heterozygosity so each variant explains at least the
    planted share of variance in every node; signs are random, shared by both traits.
    """
    heterozygosity = np.min(2 * node_af * (1 - node_af), axis=1)
    heterozygosity = np.maximum(heterozygosity, MIN_CAUSAL_HETEROZYGOSITY)
    signs = rng.choice([-1.0, 1.0], size=len(heterozygosity))
    beta = np.round(signs * np.sqrt(QUANT_VARIANCE_PER_CAUSAL / heterozygosity), 3)
    log_or = np.round(signs * np.sqrt(BINARY_LOGIT_VARIANCE_PER_CAUSAL / heterozygosity), 3)
    return beta, log_or


def simulate_phenotypes(
    dosages: np.ndarray, beta: np.ndarray, log_or: np.ndarray, rng: np.random.Generator
) -> Phenotypes:
    """quant = G.beta + age/sex effects + N(0, 1); binary ~ Bernoulli(expit(a + G.log_or + ...)).

    `dosages` is (samples, causal variants) ALT counts. The intercept `a` is solved so that
    the mean case probability is BINARY_PREVALENCE.
    """
    n = dosages.shape[0]
    age = np.asarray(rng.integers(AGE_RANGE[0], AGE_RANGE[1] + 1, size=n))
    sex = np.asarray(rng.binomial(1, 0.5, size=n))
    age_term, noise = age - AGE_CENTRE, rng.normal(0.0, NOISE_SD, size=n)
    quant_covariates = QUANT_COVARIATE_EFFECTS["age_per_year"] * age_term
    quant_covariates += QUANT_COVARIATE_EFFECTS["sex_male"] * sex
    logit = dosages @ log_or + BINARY_COVARIATE_LOG_ORS["age_per_year"] * age_term
    logit += BINARY_COVARIATE_LOG_ORS["sex_male"] * sex
    intercept = round(brentq(lambda a: expit(a + logit).mean() - BINARY_PREVALENCE, -50, 50), 6)
    binary = (rng.random(n) < expit(intercept + logit)).astype(int)
    return Phenotypes(age, sex, dosages @ beta + quant_covariates + noise, binary, intercept)


def write_phenotypes(
    path: Path, sample_ids: Sequence[str], phenotypes: Phenotypes, rows: slice
) -> None:
    """One node's rows of the phenotype table."""
    columns = (phenotypes.age, phenotypes.sex, phenotypes.quant_trait, phenotypes.binary_trait)
    lines = ["sample_id\tage\tsex\tquant_trait\tbinary_trait"]
    for sample_id, age, sex, quant, binary in zip(
        sample_ids[rows], *(c[rows] for c in columns), strict=True
    ):
        lines.append(f"{sample_id}\t{age}\t{sex}\t{quant:.6f}\t{binary}")
    path.write_text("\n".join(lines) + "\n")


@dataclass(frozen=True, eq=False)
class CohortPlan:
    """Everything decided before any genotype is drawn: nodes, samples, variant layout."""

    seed: int
    requested_samples: int | list[int]
    missing_rate: float
    node_ids: tuple[str, ...]
    sizes: tuple[int, ...]
    fst: tuple[float, ...]
    sample_ids: list[str]  # cohort-wide, in node order: "fi_00001", ...
    layout: VariantLayout
    variant_ids: list[str]
    low_call_samples: list[int]  # cohort-wide sample indices
    low_call_variants: list[int]
    x_variants: int = 0  # chrX variants after the autosomes (then chrY and MT ones)
    imputation_accuracy: np.ndarray | None = None  # per variant, when imputed files are written

    def node_rows(self) -> list[slice]:
        """Each node's rows in cohort-wide (sample-ordered) arrays."""
        bounds = np.cumsum((0, *self.sizes)).tolist()
        return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]

    def genotype_design(self) -> GenotypeDesign:
        from federation.analyses.synth_genotypes import GenotypeDesign

        return GenotypeDesign(
            seed=self.seed,
            node_sizes=self.sizes,
            node_fst=self.fst,
            sample_ids=tuple(self.sample_ids),
            contigs=tuple(self.layout.contigs()),
            positions=tuple(self.layout.positions.tolist()),
            refs=tuple(self.layout.refs.tolist()),
            alts=tuple(self.layout.alts.tolist()),
            variant_ids=tuple(self.variant_ids),
            missing_rate=self.missing_rate,
            low_call_rate_samples=frozenset(self.low_call_samples),
            low_call_rate_variants=frozenset(self.low_call_variants),
            low_call_missing_rate=LOW_CALL_MISSING_RATE,
            imputation_accuracy=None
            if self.imputation_accuracy is None
            else tuple(self.imputation_accuracy.tolist()),
        )

    def causal_variant(
        self, index: int, ancestral_af: float, node_af: np.ndarray, beta: float, log_or: float
    ) -> CausalVariant:
        layout = self.layout
        return CausalVariant(
            chromosome=layout.chromosome_names()[index],
            position=int(layout.positions[index]),
            ref=str(layout.refs[index]),
            alt=str(layout.alts[index]),
            variant_id=self.variant_ids[index],
            ancestral_alt_af=round(float(ancestral_af), 6),
            node_alt_af={
                n: round(float(af), 6) for n, af in zip(self.node_ids, node_af, strict=True)
            },
            beta_quant_trait=float(beta),
            log_or_binary_trait=float(log_or),
        )

    def truth(self, causal: Sequence[CausalVariant], binary_intercept: float) -> dict[str, Any]:
        """The content of truth.json."""
        return {
            "seed": self.seed,
            "reference_genome": "GRCh38",
            "parameters": {
                "nodes": len(self.node_ids),
                "samples_per_node": self.requested_samples,
                "variants": len(self.variant_ids),
                "missing_rate": self.missing_rate,
                "x_variants": self.x_variants,
                "imputed": self.imputation_accuracy is not None,
                "genotype_model": "balding_nichols",
                "n_causal": N_CAUSAL,
                "quant_variance_per_causal": QUANT_VARIANCE_PER_CAUSAL,
                "binary_logit_variance_per_causal": BINARY_LOGIT_VARIANCE_PER_CAUSAL,
            },
            "nodes": [
                {"node_id": node, "n_samples": size, "fst": fst}
                for node, size, fst in zip(self.node_ids, self.sizes, self.fst, strict=True)
            ],
            "causal_variants": [asdict(variant) for variant in causal],
            "covariate_effects": {
                "age_centred_at": AGE_CENTRE,
                "quant_trait": {"intercept": 0.0, **QUANT_COVARIATE_EFFECTS, "noise_sd": NOISE_SD},
                "binary_trait": {
                    "intercept": binary_intercept,
                    **BINARY_COVARIATE_LOG_ORS,
                    "target_prevalence": BINARY_PREVALENCE,
                },
            },
            "low_call_rate": {
                "missing_rate": LOW_CALL_MISSING_RATE if self.low_call_samples else 0.0,
                "samples": [self.sample_ids[i] for i in self.low_call_samples],
                "variants": [self.variant_ids[i] for i in self.low_call_variants],
            },
            "software": software_versions(),
        }


def plan_cohort(
    nodes: int,
    samples_per_node: int | Sequence[int],
    variants: int,
    seed: int,
    missing_rate: float = 0.0,
    x_variants: int = 0,
    imputed: bool = False,
) -> CohortPlan:
    """Check the request (SpecError on bad input) and lay out nodes, samples and variants.

    `variants` are autosomal; `x_variants` > 0 adds chrX, chrY and MT variants after them.
    """
    sizes = node_sample_sizes(samples_per_node, nodes)
    check_request(variants, seed, missing_rate)
    node_ids = NODE_IDS[:nodes]
    layout = variant_layout(variants, np.random.default_rng([seed, STREAM_LAYOUT]))
    if x_variants:
        extra = sex_chromosome_layout(
            x_variants, np.random.default_rng([seed, STREAM_SEX_CHROMOSOMES])
        )
        layout = joined_layout(layout, extra)
    accuracy = None
    if imputed:
        accuracy_rng = np.random.default_rng([seed, STREAM_IMPUTATION])
        accuracy = np.round(
            accuracy_rng.uniform(*IMPUTATION_ACCURACY, size=len(layout.positions)), 4
        )
    low_call_rng = np.random.default_rng([seed, STREAM_LOW_CALL])
    low_samples, low_variants = low_call_rate_indices(sizes, variants, missing_rate, low_call_rng)
    requested = [int(n) for n in np.atleast_1d(samples_per_node)]
    return CohortPlan(
        seed=seed,
        requested_samples=requested[0] if np.ndim(samples_per_node) == 0 else requested,
        missing_rate=missing_rate,
        node_ids=node_ids,
        sizes=sizes,
        fst=tuple(NODE_FST[i % len(NODE_FST)] for i in range(nodes)),
        sample_ids=[
            f"{n}_{i:05d}"
            for n, size in zip(node_ids, sizes, strict=True)
            for i in range(1, size + 1)
        ],
        layout=layout,
        variant_ids=layout.variant_ids(),
        low_call_samples=low_samples,
        low_call_variants=low_variants,
        x_variants=x_variants,
        imputation_accuracy=accuracy,
    )


def staging_directory(out_dir: Path, force: bool) -> Path:
    """A fresh directory next to `out_dir`, once `out_dir` is known to be replaceable."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SpecError(f"out_dir '{out_dir}': exists and is not a directory; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / "truth.json").is_file():
            raise SpecError(
                f"out_dir '{out_dir}': not empty and not a synthetic cohort; "
                "choose a new or empty directory for --out"
            )
        if not force:
            raise SpecError(
                f"out_dir '{out_dir}': already contains a cohort; pass --force to replace it "
                "or choose another --out"
            )
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # mkdtemp's directory is private (0700); the cohort inside it gets the usual umask.
        # Hail's scratch files go next to the cohort in it, so they never reach `out_dir`.
        holder = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
        (holder / "cohort").mkdir()
        return holder / "cohort"
    except OSError as error:
        raise SpecError(
            f"out_dir '{out_dir}': cannot write in '{out_dir.parent}' ({error.strerror}); "
            "choose a writable --out"
        ) from None


def _publish(staging: Path, out_dir: Path) -> None:
    """Rename the finished cohort into place; a replaced one is deleted only afterwards."""
    holder = staging.parent
    if out_dir.exists():
        out_dir.rename(holder / "replaced")
        try:
            staging.rename(out_dir)
        except OSError:
            (holder / "replaced").rename(out_dir)
            raise
    else:
        staging.rename(out_dir)
    shutil.rmtree(holder)


def _progress_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def synthesize(
    out_dir: Path,
    nodes: int = 3,
    samples_per_node: int | Sequence[int] = 1000,
    variants: int = 10_000,
    seed: int = 42,
    missing_rate: float = 0.0,
    force: bool = False,
    progress: Callable[[str], None] = _progress_to_stderr,
    *,
    x_variants: int = 0,
    imputed: bool = False,
) -> SynthResult:
    """Write `nodes` synthetic national cohorts and `truth.json` to `out_dir`, in one JVM.

    `samples_per_node` is the smallest node's size (the others are larger by
    NODE_SIZE_MULTIPLIERS) or one size per node. Bad input raises SpecError before any
    file is written; `force` replaces an existing cohort (never another directory).
    """
    plan = plan_cohort(nodes, samples_per_node, variants, seed, missing_rate, x_variants, imputed)
    out_dir = out_dir.absolute()
    staging = staging_directory(out_dir, force)
    cohorts = tuple(
        NodeCohort(node, size, fst, out_dir / node)
        for node, size, fst in zip(plan.node_ids, plan.sizes, plan.fst, strict=True)
    )
    try:
        # Imported here: bad input is refused without loading Hail.
        from federation.analyses.synth_genotypes import synthetic_genotypes

        with synthetic_genotypes(plan.genotype_design(), staging.parent / "hail") as genotypes:
            ancestral_af, node_af = genotypes.allele_frequencies()
            causal_rng = np.random.default_rng([seed, STREAM_CAUSAL])
            # Causal variants are autosomal: the planted effects assume diploid genotypes.
            excluded = np.isin(np.arange(len(plan.variant_ids)), plan.low_call_variants)
            excluded |= plan.layout.chromosomes > len(GRCH38_AUTOSOME_LENGTHS)
            causal = choose_causal_variants(
                plan.layout, ancestral_af, node_af, excluded, causal_rng
            )
            beta, log_or = causal_effects(node_af[causal], causal_rng)
            dosages = genotypes.alt_dosages(causal.tolist())
            phenotype_rng = np.random.default_rng([seed, STREAM_PHENOTYPES])
            phenotypes = simulate_phenotypes(dosages, beta, log_or, phenotype_rng)
            for index, (cohort, rows) in enumerate(zip(cohorts, plan.node_rows(), strict=True)):
                node_dir = staging / cohort.node_id
                genotypes.export_node(index, node_dir, is_female=(phenotypes.sex == 0).tolist())
                write_phenotypes(node_dir / "phenotypes.tsv", plan.sample_ids, phenotypes, rows)
                progress(
                    f"synth: {cohort.node_id}: {cohort.n_samples} samples, "
                    f"{len(plan.variant_ids)} variants"
                )
        causal_variants = tuple(
            plan.causal_variant(int(i), ancestral_af[i], node_af[i], b, o)
            for i, b, o in zip(causal, beta, log_or, strict=True)
        )
        truth = plan.truth(causal_variants, phenotypes.binary_intercept)
        (staging / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging.parent, ignore_errors=True)
        raise
    return SynthResult(
        out_dir, seed, len(plan.variant_ids), cohorts, causal_variants, out_dir / "truth.json"
    )
