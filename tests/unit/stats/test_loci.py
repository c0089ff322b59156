"""federation.stats.loci: the clumping rule, λGC against a known chi-square median, MAF bins."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from federation.stats import loci, meta_analysis

STRONG = 20.0  # -log10 p, far past genome-wide significance
WEAKER = 10.0
NULL = 1.0


def clump(positions: list[int], nlp: list[float], chromosomes: list[int] | None = None):
    chromosome = np.array(chromosomes or [1] * len(positions))
    return loci.clump_by_distance(chromosome, np.array(positions), np.array(nlp))


def test_two_hits_200_kb_apart_are_one_locus_led_by_the_smaller_p() -> None:
    clumps = clump([1_000_000, 1_200_000], [WEAKER, STRONG])
    assert clumps.leads.tolist() == [1]
    assert clumps.locus.tolist() == [0, 0]


def test_two_hits_300_kb_apart_are_two_loci() -> None:
    clumps = clump([1_000_000, 1_300_000], [WEAKER, STRONG])
    assert clumps.leads.tolist() == [1, 0]  # strongest first
    assert clumps.locus.tolist() == [1, 0]


def test_the_window_is_inclusive_at_250_kb_and_exclusive_beyond() -> None:
    assert clump([0, 250_000], [STRONG, WEAKER]).leads.tolist() == [0]
    assert clump([0, 250_001], [STRONG, WEAKER]).leads.tolist() == [0, 1]


def test_the_same_position_on_another_chromosome_is_another_locus() -> None:
    clumps = clump([1_000_000, 1_000_000], [STRONG, WEAKER], chromosomes=[1, 2])
    assert clumps.leads.tolist() == [0, 1]


def test_variants_above_the_threshold_belong_to_no_locus() -> None:
    clumps = clump([1_000_000, 1_100_000, 5_000_000], [STRONG, NULL, -np.log10(5e-8)])
    assert clumps.leads.tolist() == [0]  # exactly 5e-8 is not below 5e-8
    assert clumps.locus.tolist() == [0, -1, -1]


def test_a_hit_joins_the_nearest_lead_not_the_first_chosen() -> None:
    # Leads at 0 and 400 kb; a weaker hit at 240 kb is 160 kb from the second lead.
    clumps = clump([0, 400_000, 240_000], [STRONG, STRONG - 1, WEAKER])
    assert clumps.leads.tolist() == [0, 1]
    assert clumps.locus.tolist() == [0, 1, 1]


def test_clumping_ranks_p_values_below_the_float_range() -> None:
    clumps = clump([0, 100_000], [400.0, 350.0])  # p = 1e-400 and 1e-350
    assert clumps.leads.tolist() == [0]


def test_lambda_of_null_z_is_one_and_of_inflated_z_is_the_inflation() -> None:
    rng = np.random.default_rng(3)
    z = rng.standard_normal(400_000)
    assert meta_analysis.genomic_control_lambda(z) == pytest.approx(1.0, abs=0.01)
    assert meta_analysis.genomic_control_lambda(z * np.sqrt(1.2)) == pytest.approx(1.2, abs=0.012)


def test_lambda_uses_the_chi_square_median_of_one_degree_of_freedom() -> None:
    # z² equal to the χ²₁ median at the middle element gives λ = 1 exactly.
    median = stats.chi2.median(1)
    z = np.sqrt(np.array([0.01, median, 30.0]))
    assert meta_analysis.genomic_control_lambda(z) == pytest.approx(1.0, rel=1e-9)
    assert meta_analysis.genomic_control_lambda(z * 2) == pytest.approx(4.0, rel=1e-9)


def test_lambda_by_maf_bins_each_variant_by_its_minor_allele_frequency() -> None:
    z = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    frequency = np.array([0.995, 0.03, 0.9, 0.5, 0.3])  # MAF 0.005, 0.03, 0.1, 0.5, 0.3
    bins = loci.lambda_by_maf(z, frequency)
    assert [b.label for b in bins] == ["MAF 0-0.01", "MAF 0.01-0.05", "MAF 0.05-0.2", "MAF 0.2-0.5"]
    assert [b.n_variants for b in bins] == [1, 1, 1, 1]  # the NaN z counts in no bin
    median = stats.chi2.median(1)
    assert [b.lambda_gc for b in bins] == pytest.approx(
        [1 / median, 4 / median, 9 / median, 16 / median]
    )


def test_an_empty_maf_bin_has_no_lambda() -> None:
    bins = loci.lambda_by_maf(np.array([1.0]), np.array([0.3]))
    assert bins[0].n_variants == 0 and np.isnan(bins[0].lambda_gc)


def test_rows_without_frequency_are_in_no_maf_bin() -> None:
    assert loci.maf_bin_index(np.array([np.nan, -0.1, 0.6, 0.0])).tolist() == [-1, -1, -1, 0]
