"""federation.stats.harmonize: one test per alignment rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.stats.harmonize import RowFate, align, complement, describe_pairs


def run(rows: list[tuple], band: tuple[float, float] = (0.4, 0.6)):
    """rows: (input, position, effect, other, frequency[, alt_is_effect])."""
    columns = list(zip(*[r if len(r) == 6 else (*r, True) for r in rows], strict=True))
    return align(
        np.array(columns[0], dtype=np.int64),
        np.array(columns[1], dtype=np.int64),
        np.array(columns[2], dtype=object),
        np.array(columns[3], dtype=object),
        np.array(columns[4], dtype=float),
        np.array(columns[5], dtype=bool),
        band,
    )


def test_same_alleles_match() -> None:
    a = run([(0, 100, "G", "A", 0.2), (1, 100, "G", "A", 0.25)])
    assert a.n_groups == 1 and list(a.group) == [0, 0] and list(a.sign) == [1, 1]
    assert (a.effect_allele[0], a.other_allele[0]) == ("G", "A")


def test_allele_swap_flips_the_sign() -> None:
    a = run([(0, 100, "G", "A", 0.2), (1, 100, "A", "G", 0.8), (2, 100, "G", "A", 0.2)])
    assert a.n_groups == 1
    assert list(a.sign) == [1, -1, 1]
    assert list(a.swapped) == [False, True, False]
    assert not a.strand_flipped.any()


def test_strand_flip_of_a_non_palindromic_snp_is_complemented() -> None:
    # G/A on the reverse strand reads C/T.
    a = run([(0, 100, "G", "A", 0.2), (1, 100, "C", "T", 0.2), (2, 100, "G", "A", 0.2)])
    assert a.n_groups == 1 and list(a.sign) == [1, 1, 1]
    assert list(a.strand_flipped) == [False, True, False]
    assert (a.effect_allele[0], a.other_allele[0]) == ("G", "A")


def test_strand_flip_and_swap_together() -> None:
    a = run([(0, 100, "G", "A", 0.2), (1, 100, "T", "C", 0.8), (2, 100, "G", "A", 0.2)])
    assert list(a.sign) == [1, -1, 1]
    assert list(a.strand_flipped) == [False, True, False]


def test_alleles_are_case_insensitive() -> None:
    a = run([(0, 100, "g", "a", 0.2), (1, 100, "G", "A", 0.2), (2, 100, "a", "G", 0.8)])
    assert a.n_groups == 1 and list(a.sign) == [1, 1, -1]
    assert (a.effect_allele[0], a.other_allele[0]) == ("G", "A")


def test_indels_match_on_the_exact_pair_or_its_swap_never_complemented() -> None:
    a = run(
        [
            (0, 100, "AT", "A", 0.1),
            (1, 100, "A", "AT", 0.9),
            (2, 100, "TA", "T", 0.1),  # the complement: a different variant
        ]
    )
    assert a.n_groups == 2
    assert a.group[0] == a.group[1] != a.group[2]
    assert list(a.sign[:2]) == [1, -1]
    assert not a.strand_flipped.any()


def test_multi_allelic_site_is_one_variant_per_allele_pair() -> None:
    a = run(
        [
            (0, 100, "G", "A", 0.1),
            (0, 100, "T", "A", 0.05),
            (1, 100, "A", "G", 0.9),
            (1, 100, "T", "A", 0.04),
        ]
    )
    assert a.n_groups == 2
    assert a.group[0] == a.group[2] and a.group[1] == a.group[3] and a.group[0] != a.group[1]
    assert (a.fate == RowFate.KEPT).all()


def test_variants_in_only_some_inputs_are_grouped_over_that_subset() -> None:
    a = run([(0, 100, "G", "A", 0.2), (1, 200, "C", "T", 0.3), (2, 100, "G", "A", 0.2)])
    assert a.n_groups == 2
    assert list(a.position) == [100, 200]
    assert np.bincount(a.group).tolist() == [2, 1]


def test_palindromic_snp_on_the_other_strand_is_placed_by_frequency() -> None:
    # A/T with A at 0.2: a reverse-strand input calls the same allele "T" at 0.2.
    a = run([(0, 100, "A", "T", 0.2), (1, 100, "T", "A", 0.2), (2, 100, "A", "T", 0.22)])
    assert a.n_groups == 1 and (a.fate == RowFate.KEPT).all()
    assert list(a.sign) == [1, 1, 1], "same allele, so same sign (not an allele swap)"
    assert list(a.strand_flipped) == [False, True, False]


def test_palindromic_snp_swapped_on_the_same_strand_is_a_swap() -> None:
    a = run([(0, 100, "A", "T", 0.2), (1, 100, "T", "A", 0.8), (2, 100, "A", "T", 0.2)])
    assert list(a.sign) == [1, -1, 1]
    assert not a.strand_flipped.any()


@pytest.mark.parametrize("frequency", [0.4, 0.45, 0.5, 0.55, 0.6])
def test_ambiguous_palindromic_snp_is_dropped_and_counted_never_flipped(frequency: float) -> None:
    a = run([(0, 100, "A", "T", 0.2), (1, 100, "T", "A", frequency), (2, 100, "A", "T", 0.2)])
    assert a.fate[1] == RowFate.PALINDROMIC_AMBIGUOUS
    assert list(a.fate[[0, 2]]) == [RowFate.KEPT, RowFate.KEPT]


@pytest.mark.parametrize("frequency", [0.39, 0.61])
def test_palindromic_snp_just_outside_the_band_is_kept(frequency: float) -> None:
    a = run([(0, 100, "A", "T", 0.2), (1, 100, "A", "T", frequency)])
    assert (a.fate == RowFate.KEPT).all()


def test_the_band_is_configurable() -> None:
    rows = [(0, 100, "C", "G", 0.35), (1, 100, "C", "G", 0.3)]
    assert (run(rows).fate == RowFate.KEPT).all()
    assert (run(rows, band=(0.3, 0.7)).fate == RowFate.PALINDROMIC_AMBIGUOUS).all()


def test_palindromic_snp_without_frequency_is_dropped_when_it_must_be_aligned() -> None:
    a = run([(0, 100, "A", "T", 0.2), (1, 100, "A", "T", np.nan)])
    assert a.fate[1] == RowFate.PALINDROMIC_NO_FREQUENCY and a.fate[0] == RowFate.KEPT


def test_palindromic_snp_in_one_input_needs_no_alignment_and_is_kept() -> None:
    a = run([(0, 100, "A", "T", 0.5), (1, 200, "C", "G", np.nan)])
    assert (a.fate == RowFate.KEPT).all() and a.n_groups == 2


def test_duplicated_variant_in_one_input_drops_both_rows() -> None:
    a = run([(0, 100, "G", "A", 0.2), (0, 100, "A", "G", 0.8), (1, 100, "G", "A", 0.2)])
    assert list(a.fate) == [RowFate.DUPLICATE_VARIANT] * 2 + [RowFate.KEPT]
    assert a.n_groups == 1 and a.group[2] == 0


def test_orientation_follows_the_alternate_allele_claims_not_input_order() -> None:
    rows = [(0, 100, "A", "G", 0.8, False), (1, 100, "G", "A", 0.2, True)]
    first = run(rows)
    second = run([(1 - r[0], *r[1:]) for r in reversed(rows)])
    assert (first.effect_allele[0], first.other_allele[0]) == ("G", "A")
    assert (second.effect_allele[0], second.other_allele[0]) == ("G", "A")


def test_output_strand_is_the_one_most_inputs_use() -> None:
    a = run([(0, 100, "C", "T", 0.2), (1, 100, "C", "T", 0.2), (2, 100, "G", "A", 0.2)])
    assert (a.effect_allele[0], a.other_allele[0]) == ("C", "T")
    assert list(a.strand_flipped) == [False, False, True]


def test_describe_pairs_and_complement() -> None:
    pairs = describe_pairs(["G", "C", "A", "AT"], ["A", "T", "T", "A"])
    assert list(pairs.key) == ["A/G", "A/G", "A/T", "A/AT"]
    assert list(pairs.on_complement) == [False, True, False, False]
    assert list(pairs.palindromic) == [False, False, True, False]
    assert list(pairs.complementable) == [True, True, False, False]
    assert complement("ACGT") == "TGCA"


@given(st.lists(st.integers(0, 60), max_size=200), st.booleans())
def test_unique_codes_is_np_unique(values: list[int], force_sort: bool) -> None:
    """The table path and the sort path give np.unique's answer."""
    from federation.stats import harmonize

    array = np.array(values, dtype=np.int64)
    upper = harmonize.DENSE_CELL_LIMIT + 1 if force_sort else 61
    uniques, inverse = harmonize._unique_codes(array, upper)
    expected_uniques, expected_inverse = np.unique(array, return_inverse=True)
    np.testing.assert_array_equal(uniques, expected_uniques)
    np.testing.assert_array_equal(inverse, expected_inverse.reshape(-1))


def run_aligned(rows: list[tuple], aligned_inputs: set[int]):
    """rows: (input, position, effect, other, frequency); `aligned_inputs` are reference-aligned."""
    columns = list(zip(*rows, strict=True))
    inputs = np.array(columns[0], dtype=np.int64)
    return align(
        inputs,
        np.array(columns[1], dtype=np.int64),
        np.array(columns[2], dtype=object),
        np.array(columns[3], dtype=object),
        np.array(columns[4], dtype=float),
        np.ones(len(rows), dtype=bool),
        (0.4, 0.6),
        np.isin(inputs, list(aligned_inputs)),
    )


def test_palindromes_of_reference_aligned_inputs_are_kept_even_at_maf_one_half() -> None:
    a = run_aligned([(0, 100, "T", "A", 0.48), (1, 100, "T", "A", 0.55)], {0, 1})
    assert list(a.fate) == [RowFate.KEPT, RowFate.KEPT]
    assert list(a.sign) == [1, 1] and not a.strand_flipped.any()


def test_palindromes_of_reference_aligned_inputs_are_kept_without_a_frequency() -> None:
    a = run_aligned([(0, 100, "C", "G", np.nan), (1, 100, "C", "G", np.nan)], {0, 1})
    assert list(a.fate) == [RowFate.KEPT, RowFate.KEPT]


def test_a_non_aligned_input_with_a_flipped_palindrome_near_one_half_is_still_dropped() -> None:
    """METAL's silent case: the non-aligned input reports the other strand (T/A written as A/T
    with the frequency of the other allele); near 0.5 nothing can tell, so it is dropped."""
    a = run_aligned(
        [(0, 100, "T", "A", 0.45), (1, 100, "T", "A", 0.46), (2, 100, "A", "T", 0.45)], {0, 1}
    )
    assert list(a.fate) == [RowFate.KEPT, RowFate.KEPT, RowFate.PALINDROMIC_AMBIGUOUS]


def test_a_non_aligned_flipped_palindrome_is_placed_by_the_aligned_rows_frequency() -> None:
    """Input 2 is on the other strand: its effect allele A is the aligned inputs' T. The two
    aligned rows say T is minor (0.2); input 2 says its A has 0.2: a strand flip, turned round
    onto the aligned label, whatever the majority of non-aligned rows says."""
    a = run_aligned(
        [(0, 100, "T", "A", 0.2), (1, 100, "T", "A", 0.22), (2, 100, "A", "T", 0.2)], {0, 1}
    )
    assert list(a.fate) == [RowFate.KEPT] * 3
    assert list(a.strand_flipped) == [False, False, True]
    assert a.sign[2] == a.sign[0]  # after the flip, its effect allele is the aligned rows' T


def test_without_aligned_inputs_the_frequency_rule_is_as_before() -> None:
    a = run_aligned([(0, 100, "T", "A", 0.48), (1, 100, "T", "A", 0.55)], set())
    assert list(a.fate) == [RowFate.PALINDROMIC_AMBIGUOUS] * 2
