"""Each disclosure threshold below, at and above its limit (DESIGN.md §5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from federation.disclosure import (
    DisclosurePolicy,
    DisclosureReport,
    Verdict,
    allowed_columns,
    max_parameters,
    min_allele_number,
    min_carriers,
    min_cohort,
    min_minor_allele_count,
    min_residual_df,
    round_n,
    round_n_array,
)
from federation.errors import DisclosureError

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
def test_round_n_to_nearest_five(n, rounded):
    assert round_n(n, 5) == rounded
    assert round_n_array(np.array([n]), 5).tolist() == [rounded]


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
        {"min_mac_gwas": 40, "max_parameter_fraction": 0.1, "n_rounding": 10}, "study 's'"
    )
    assert (stricter.min_mac_gwas, stricter.max_parameter_fraction, stricter.n_rounding) == (
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
        ("n_rounding", 1),
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
