"""Each disclosure threshold below, at and above its limit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from federation.errors import DisclosureError
from federation.release.rules import (
    DisclosurePolicy,
    DisclosureReport,
    RefusalCategory,
    Verdict,
    allowed_columns,
    cell_values,
    cohort_listed,
    environment_overrides,
    guarded,
    guarded_rows,
    max_missing_calls,
    max_parameters,
    min_allele_number,
    min_carriers,
    min_cell_size,
    min_cohort,
    min_minor_allele_count,
    min_residual_df,
    min_rows_released,
    min_usable_samples,
    phenotypes_per_person,
    private_columns,
    round_count,
)

POLICY = DisclosurePolicy()


@pytest.mark.parametrize(
    ("rule", "limit"),
    [("min_cohort_af", POLICY.min_cohort_af), ("min_cohort_gwas", POLICY.min_cohort_gwas)],
)
@pytest.mark.parametrize(
    ("offset", "verdict"), [(-1, Verdict.WITHHOLD), (0, Verdict.PASS), (1, Verdict.PASS)]
)
def test_cohort_floor(rule, limit, offset, verdict):
    outcome = min_cohort(rule, limit + offset, limit)
    assert outcome.verdict is verdict
    assert outcome.observed == limit + offset and outcome.threshold == limit


@pytest.mark.parametrize("limit", [POLICY.min_mac_af, POLICY.min_mac_gwas])
def test_minor_allele_count_floor_rows(limit):
    allele_number = np.full(6, 1000)
    # MAC below, at and above the limit, once with alt as the minor allele and once as the major.
    alt = np.array(
        [limit - 1, limit, limit + 1, 1000 - (limit - 1), 1000 - limit, 1000 - (limit + 1)]
    )
    outcome, keep = min_minor_allele_count("mac", alt, allele_number, limit)
    assert keep.tolist() == [False, True, True, False, True, True]
    assert outcome.verdict is Verdict.SUPPRESS_ROWS and outcome.rows_suppressed == 2


def test_minor_allele_count_all_pass_is_pass():
    outcome, keep = min_minor_allele_count("mac", np.array([50, 60]), np.array([1000, 1000]), 20)
    assert keep.all() and outcome.verdict is Verdict.PASS and outcome.rows_suppressed == 0


def test_allele_number_floor():
    limit = POLICY.min_an_af
    outcome, keep = min_allele_number(np.array([limit - 1, limit, limit + 1]), limit)
    assert keep.tolist() == [False, True, True] and outcome.rows_suppressed == 1


def test_carrier_floor_needs_both_groups():
    limit = POLICY.min_carriers_per_group
    cases = np.array([limit - 1, limit, limit + 1, limit + 5])
    controls = np.array([limit + 5, limit, limit + 1, limit - 1])
    outcome, keep = min_carriers(cases, controls, limit)
    assert keep.tolist() == [False, True, True, False]
    assert outcome.rows_suppressed == 2


@pytest.mark.parametrize(
    ("offset", "verdict"), [(-1, Verdict.WITHHOLD), (0, Verdict.PASS), (1, Verdict.PASS)]
)
def test_residual_df_floor(offset, verdict):
    assert (
        min_residual_df(POLICY.min_residual_df + offset, POLICY.min_residual_df).verdict is verdict
    )


@pytest.mark.parametrize(
    ("n_parameters", "verdict"), [(32, Verdict.PASS), (33, Verdict.PASS), (34, Verdict.WITHHOLD)]
)
def test_parameter_fraction(n_parameters, verdict):
    # 0.33 * 100 = 33 parameters is the most a 100-sample model may have.
    assert max_parameters(n_parameters, 100, POLICY.max_parameter_fraction).verdict is verdict


@pytest.mark.parametrize(
    ("n", "rounded"), [(0, 0), (2, 0), (3, 5), (7, 5), (8, 10), (1001, 1000), (1003, 1005)]
)
def test_qc_counts_round_to_nearest_five(n, rounded):
    assert round_count(n, 5) == rounded


@pytest.mark.parametrize("column", ["sample_id", "sum_x", "y_transpose_x", "residuals", "comment"])
def test_columns_outside_allow_list_withhold(column):
    frame = pd.DataFrame({"beta": [0.1], column: ["x"]})
    outcome = allowed_columns(frame, ("beta",))
    assert outcome.verdict is Verdict.WITHHOLD and column in str(outcome.observed)


def test_allowed_columns_pass():
    assert (
        allowed_columns(pd.DataFrame({"beta": [1.0]}), ("beta", "p_value")).verdict is Verdict.PASS
    )


def test_policy_can_be_tightened():
    stricter = POLICY.tightened(
        {"min_mac_gwas": 40, "max_parameter_fraction": 0.1, "qc_count_rounding": 10}, "study 's'"
    )
    assert (stricter.min_mac_gwas, stricter.max_parameter_fraction, stricter.qc_count_rounding) == (
        40,
        0.1,
        10,
    )
    assert POLICY.min_mac_gwas == 20  # the original is untouched


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("min_mac_gwas", 19),
        ("min_cohort_af", 0),
        ("max_parameter_fraction", 0.5),
        ("qc_count_rounding", 1),
        ("min_cell_size", 9),
        ("max_phenotypes_per_person", 21),
    ],
)
def test_policy_refuses_loosening(name, value):
    with pytest.raises(DisclosureError) as error:
        POLICY.tightened({name: value}, "study 's'")
    message = str(error.value)
    assert name in message and str(value) in message and "loosen" in message and "\n" not in message


def test_policy_refuses_unknown_threshold():
    with pytest.raises(DisclosureError, match="min_carriers"):
        POLICY.tightened({"min_carriers": 1}, "node 'fi' config")


def test_report_withholds_when_any_release_rule_fails():
    outcomes = (min_cohort("min_cohort_gwas", 99, 100), min_residual_df(50, 10))
    report = DisclosureReport("analysis 'a'", outcomes, rows_in=10, rows_released=10)
    assert not report.released
    assert report.withheld_reasons() == ["min_cohort_gwas: observed 99, limit 100"]
    # The public summary names rules and thresholds only: no observed values, no row counts.
    assert report.public_summary() == {
        "gate": "default-deny",
        "rules": {"min_cohort_gwas": 100, "min_residual_df": 10},
    }


# ---------------------------------------------------------------- rules added with the ledger


@pytest.mark.parametrize(
    ("smallest", "verdict"),
    [
        (None, Verdict.PASS),  # the release touches no cell
        (1, Verdict.WITHHOLD),
        (9, Verdict.WITHHOLD),
        (10, Verdict.PASS),
        (11, Verdict.PASS),
    ],
)
def test_cell_guard_below_at_and_above_the_smallest_cell(smallest, verdict):
    outcome = min_cell_size(smallest, POLICY.min_cell_size)
    assert outcome.verdict is verdict and outcome.threshold == 10


@pytest.mark.parametrize(
    ("most", "verdict"), [(19, Verdict.PASS), (20, Verdict.PASS), (21, Verdict.WITHHOLD)]
)
def test_phenotype_budget_per_person_below_at_and_above(most, verdict):
    outcome = phenotypes_per_person(most, POLICY.max_phenotypes_per_person)
    assert outcome.verdict is verdict and outcome.threshold == 20


def test_rows_with_more_no_calls_than_the_cells_spare_are_dropped():
    outcome, keep = max_missing_calls(np.array([4, 5, 6, 0]), 5)
    assert keep.tolist() == [True, True, False, True]
    assert outcome.verdict is Verdict.SUPPRESS_ROWS and outcome.rows_suppressed == 1


def test_a_withheld_report_names_its_category_not_its_value():
    report = DisclosureReport(
        "analysis 'a'", (min_residual_df(50, 10), min_cell_size(3, 10)), 10, 10
    )
    assert report.category is RefusalCategory.OVERLAPS_EARLIER_RELEASES
    assert "3" not in report.category.value and "3" not in report.category.remedy
    assert report.audit_record()["category"] == "overlaps_earlier_releases"
    assert DisclosureReport("a", (min_residual_df(50, 10),), 1, 1).category is None


def test_carrier_floor_below_at_above_in_each_group():
    limit = POLICY.min_carriers_per_group
    for group in ("cases", "controls"):
        values = np.array([limit - 1, limit, limit + 1])
        plenty = np.full(3, 1000)
        args = (values, plenty) if group == "cases" else (plenty, values)
        _, keep = min_carriers(*args, limit)
        assert keep.tolist() == [False, True, True]


@pytest.mark.parametrize(
    ("n", "listed", "verdict"),
    [(100, 100, Verdict.PASS), (100, 99, Verdict.WITHHOLD), (100, 101, Verdict.WITHHOLD)],
)
def test_cohort_list_must_be_the_analysed_cohort(n, listed, verdict):
    assert cohort_listed(n, listed).verdict is verdict


def _variants(variant_id: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "chromosome": ["1"],
            "base_pair_location": [100],
            "ref": ["A"],
            "alt": ["G"],
            "variant_id": [variant_id],
            "allele_count": [10],
        }
    )


@pytest.mark.parametrize(
    ("length_offset", "verdict"), [(-1, Verdict.PASS), (0, Verdict.PASS), (1, Verdict.WITHHOLD)]
)
def test_variant_id_length_below_at_above(length_offset, verdict):
    limit = POLICY.max_variant_id_length
    alt = "G" * (limit - len("1_100_A_") + length_offset)
    frame = _variants(f"1_100_A_{alt}").assign(alt=alt)
    assert len(frame["variant_id"][0]) == limit + length_offset
    assert cell_values(frame, limit).verdict is verdict


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("alt", "see notes: participant 17"),  # free text in an allele column
        ("chromosome", "chr1"),
        ("variant_id", "1_100_A_G;S00017"),  # an ID that is not its row's chr_pos_ref_alt
        ("allele_count", "ten"),  # text in a numeric column
    ],
)
def test_free_text_in_cells_withholds(column, value):
    frame = _variants("1_100_A_G")
    frame[column] = [value]
    outcome = cell_values(frame, POLICY.max_variant_id_length)
    assert outcome.verdict is Verdict.WITHHOLD and column in str(outcome.observed)


def test_private_table_with_unexpected_or_missing_columns_withholds():
    frame = pd.DataFrame({"beta": [0.1], "sample_id": ["S1"]})
    outcome = private_columns(frame, frozenset({"beta", "n"}))
    assert outcome.verdict is Verdict.WITHHOLD
    assert outcome.observed == "sample_id,missing:n"  # names columns, never values
    assert (
        private_columns(frame[["beta"]].assign(n=1), frozenset({"beta", "n"})).verdict
        is Verdict.PASS
    )


def test_a_rule_that_raises_withholds_and_says_why():
    def broken(*_):
        raise ZeroDivisionError("division by zero")

    outcome = guarded("min_residual_df", broken, 1)
    assert outcome.verdict is Verdict.WITHHOLD
    assert outcome.observed == "error: ZeroDivisionError: division by zero"
    row_outcome, keep = guarded_rows("min_mac_gwas", 3, broken)
    assert row_outcome.verdict is Verdict.WITHHOLD and keep.tolist() == [False] * 3


def test_row_rule_with_wrong_mask_withholds():
    outcome, keep = guarded_rows("m", 3, lambda: (min_cohort("m", 1, 1), np.ones(2, dtype=bool)))
    assert outcome.verdict is Verdict.WITHHOLD and not keep.any()


def test_rows_with_missing_counts_are_suppressed_not_released():
    alt = np.array([50.0, np.nan])
    _, keep = min_minor_allele_count("mac", alt, np.array([1000.0, 1000.0]), 20)
    assert keep.tolist() == [True, False]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("min_cell_size", 9),
        ("max_variant_id_length", 257),
        ("max_phenotypes_per_person", 21),
    ],
)
def test_new_thresholds_cannot_be_loosened(name, value):
    with pytest.raises(DisclosureError, match="would loosen"):
        POLICY.tightened({name: value}, "study 's'")


@pytest.mark.parametrize("value", ["5", True, float("nan"), 20.5])
def test_thresholds_must_be_numbers(value):
    with pytest.raises(DisclosureError, match="min_mac_gwas"):
        POLICY.tightened({"min_mac_gwas": value}, "study 's'")


def test_environment_overrides_are_detected_never_applied():
    environ = {
        "FEDERATION_DISCLOSURE_MIN_MAC_GWAS": "1",
        "federation_disclosure_min_cell_size": "1",
        "FEDERATION_HOME": "/x",
    }
    assert environment_overrides(environ) == [
        "FEDERATION_DISCLOSURE_MIN_MAC_GWAS",
        "federation_disclosure_min_cell_size",
    ]
    assert DisclosurePolicy() == POLICY  # the policy has no way to read them


@pytest.mark.parametrize("rule", [min_usable_samples, min_rows_released])
@pytest.mark.parametrize(
    ("count", "verdict"), [(0, Verdict.WITHHOLD), (1, Verdict.PASS), (2, Verdict.PASS)]
)
def test_nothing_to_release_is_refused_as_no_usable_data(rule, count, verdict):
    outcome = rule(count)
    assert outcome.verdict is verdict and outcome.threshold == 1
    report = DisclosureReport("analysis 'q'", (outcome,), count, count)
    expected = None if verdict is Verdict.PASS else RefusalCategory.NO_USABLE_DATA
    assert report.category is expected
