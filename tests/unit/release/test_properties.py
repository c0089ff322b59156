"""Property: over random genotype/phenotype tables and requests, every released row satisfies
every rule of the effective policy, or nothing is released. Recomputed from the individual-level
data, not from the private tables the gate saw."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation import sumstats
from federation.errors import DisclosureError
from federation.release.rules import DisclosurePolicy
from federation.release.tables import (
    RELEASED_AF_COLUMNS,
    RELEASED_BINARY_GWAS_COLUMNS,
    RELEASED_GWAS_COLUMNS,
)
from tests.unit.cohorts import (
    Cohort,
    make_node,
    make_study,
    random_cohort,
    release_af_of,
    release_gwas_of,
    write_inputs,
)

FREQUENCIES = st.lists(
    st.one_of(st.sampled_from([0.0, 0.001, 0.005, 0.01, 0.02]), st.floats(0.0, 0.5)),
    min_size=1,
    max_size=6,
)
TIGHTENING = st.fixed_dictionaries(
    {},
    optional={
        "min_mac_gwas": st.integers(20, 60),
        "min_mac_af": st.integers(10, 40),
        "min_carriers_per_group": st.integers(10, 30),
        "min_cohort_gwas": st.integers(100, 200),
        "min_cell_size": st.sampled_from([10, 15]),
    },
)


def _counts(cohort: Cohort, variant: int) -> dict[str, float]:
    g = cohort.genotypes[:, variant]
    called = ~np.isnan(g)
    alt = float(np.nansum(g))
    an = 2.0 * called.sum()
    cases = cohort.phenotype == 1
    minor_is_alt = alt <= an - alt
    carriers = (g > 0) if minor_is_alt else (g < 2)
    return {
        "mac": min(alt, an - alt),
        "an": an,
        "cases": float((cases & called & carriers).sum()),
        "controls": float((~cases & called & carriers).sum()),
    }


def _check_release(
    path: Path, cohort: Cohort, policy: DisclosurePolicy, kind: str, binary: bool, n_parameters: int
) -> None:
    table = sumstats.read_table(path)
    sidecar = sumstats.read_sidecar(path)
    n = len(cohort.sample_ids)
    assert sidecar["n"] == n  # exact, as the privacy model documents
    text = path.read_bytes() + sumstats.sidecar_path(path).read_bytes()
    assert not any(sample.encode() in text for sample in cohort.sample_ids[:50])
    if kind == "af":
        assert tuple(table.columns) == RELEASED_AF_COLUMNS
        assert n >= policy.min_cohort_af
    else:
        columns = RELEASED_BINARY_GWAS_COLUMNS if binary else RELEASED_GWAS_COLUMNS
        assert tuple(table.columns) == columns
        if binary:  # every row carries its analysis's case and control counts
            assert (table["n_cases"] + table["n_controls"] == n).all()
        assert n >= policy.min_cohort_gwas and n - n_parameters >= policy.min_residual_df
        assert n_parameters <= policy.max_parameter_fraction * n
        assert (table["n"] == n).all()
    index = {int(p): j for j, p in enumerate(cohort.positions)}
    for position in table["base_pair_location"]:
        counts = _counts(cohort, index[int(position)])
        assert n - counts["an"] / 2 <= n - policy.min_cell_size  # no-calls the cells can spare
        if kind == "af":
            assert counts["mac"] >= policy.min_mac_af and counts["an"] >= policy.min_an_af
        else:
            assert counts["mac"] >= policy.min_mac_gwas
            if binary:
                assert min(counts["cases"], counts["controls"]) >= policy.min_carriers_per_group


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(40, 260),
    frequencies=FREQUENCIES,
    binary=st.booleans(),
    covariates=st.integers(0, 3),
    missing=st.sampled_from([0.0, 0.05, 0.3]),
    kind=st.sampled_from(["af", "gwas"]),
    tightening=TIGHTENING,
    dropped=st.integers(0, 15),
)
def test_released_rows_satisfy_every_rule_or_nothing_is_released(
    seed, n, frequencies, binary, covariates, missing, kind, tightening, dropped
):
    rng = np.random.default_rng(seed)
    cohort = random_cohort(rng, n, frequencies, binary, covariates, missing)
    policy = DisclosurePolicy().tightened(tightening, "test")
    n_parameters = 2 + covariates
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        node, audit = make_node(root), root / "audit.jsonl"
        released: list[set[str]] = []
        # A first request on the cohort, then a second on the cohort minus `dropped` samples:
        # together they must never amount to a differencing attack.
        for step, members in enumerate((cohort, cohort.subset(np.arange(n) >= dropped))):
            if len(members.sample_ids) == 0:
                continue
            inputs = write_inputs(members, root / f"in{step}", binary)
            study = make_study(f"s{step}", binary=binary, covariates=covariates, **tightening)
            out_dir = root / f"out{step}"
            try:
                if kind == "af":
                    path = release_af_of(node, study, inputs, out_dir, audit)
                else:
                    path = release_gwas_of(node, study, inputs, "trait", out_dir, audit)
            except DisclosureError:
                assert not out_dir.exists() or not any(out_dir.glob("*.gz*"))
                continue
            _check_release(path, members, policy, kind, binary, n_parameters)
            released.append(set(members.sample_ids))
        if len(released) == 2:
            for cell in (released[0] - released[1], released[1] - released[0]):
                assert len(cell) == 0 or len(cell) >= policy.min_cell_size
