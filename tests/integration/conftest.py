"""Fixtures shared by integration tests: synthetic cohorts (real Hail), the federated run on
them, servers, tools.

Session fixtures hold files only (their Hail sessions, processes and servers end with the run
that made them): servers a module needs are started and stopped in that module.
"""

from __future__ import annotations

import pytest

from federation.sandbox.synth import SynthResult, synthesize
from tests.integration.federated_runs import FederatedRun, run_federation

# Synthetic cohorts ---------------------------------------------------------------------
# Each is generated once per test session (one JVM start each) and must be treated as
# read-only: copy a node's files before changing them. truth.json holds what was planted.
SYNTHETIC_COHORT_SEED = 11
SYNTHETIC_FEDERATION_SEED = 12


@pytest.fixture(scope="session")
def synthetic_cohort(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """One node ('fi') x 1,200 samples x 5,000 variants, seed 11.

    1% of calls are missing, and a few samples and variants have a 25% missing rate
    (listed under truth.json "low_call_rate"), so call-rate QC has something to remove.
    """
    return synthesize(
        tmp_path_factory.mktemp("synthetic_cohort") / "cohort",
        nodes=1,
        samples_per_node=1200,
        variants=5_000,
        seed=SYNTHETIC_COHORT_SEED,
        missing_rate=0.01,
        progress=lambda line: None,
    )


@pytest.fixture(scope="session")
def synthetic_federation(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """Three nodes ('fi' 1,000, 'ee' 1,400, 'nl' 1,200 samples) x 5,000 variants, seed 12.

    No missing calls; every planted variant is genome-wide significant in each node's
    linear GWAS of quant_trait and in the pooled logistic GWAS of binary_trait.
    """
    return synthesize(
        tmp_path_factory.mktemp("synthetic_federation") / "cohorts",
        nodes=3,
        samples_per_node=1000,
        variants=5_000,
        seed=SYNTHETIC_FEDERATION_SEED,
        progress=lambda line: None,
    )


# Federated runs -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def federated_run(
    synthetic_federation: SynthResult, tmp_path_factory: pytest.TempPathFactory
) -> FederatedRun:
    """The synthetic federation over local mailboxes, run once for the session: three node
    pipelines side by side, the coordinator's meta-analysis, report and RO-Crate
    (tests/integration/federated_runs.py). test_federation.py, test_provenance.py and
    test_node_vs_plink2.py read it."""
    return run_federation(
        tmp_path_factory.mktemp("federation_local"), synthetic_federation, "local"
    )
