"""The node bench's fit of fixed and per-genotype cost, and its size list (no runs)."""

from __future__ import annotations

import argparse

import pytest

from bench.node_pipeline import fit_fixed_and_per_genotype, parse_sizes


def test_the_fit_recovers_a_planted_fixed_and_per_genotype_cost():
    genotypes = [1e7, 1e8, 5e7, 5e8]
    walls = [28.2 + 0.105 * g / 1e6 for g in genotypes]
    fixed, slope = fit_fixed_and_per_genotype(genotypes, walls)
    assert fixed == pytest.approx(28.2) and slope == pytest.approx(0.105)


def test_sizes_are_read_as_samples_by_variants_and_a_bad_one_is_named():
    assert parse_sizes("1000x10000, 5000x100000") == ((1000, 10_000), (5000, 100_000))
    with pytest.raises(argparse.ArgumentTypeError, match="'5k x 100k' is not SAMPLESxVARIANTS"):
        parse_sizes("5k x 100k")
