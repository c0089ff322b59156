"""Pseudo-autosomal regions: positions below, at and above each boundary, both builds."""

from __future__ import annotations

import pytest

from federation.genome import (
    PSEUDOAUTOSOMAL_REGIONS,
    bare_chromosome,
    in_x_nonpar,
    in_x_par,
)


@pytest.mark.parametrize("build", sorted(PSEUDOAUTOSOMAL_REGIONS))
@pytest.mark.parametrize("region", [0, 1])
def test_par_boundaries_are_inclusive_and_nothing_outside_is_par(build: str, region: int) -> None:
    start, end = PSEUDOAUTOSOMAL_REGIONS[build][region]
    assert not in_x_par(build, "chrX", start - 1)
    assert in_x_par(build, "chrX", start)
    assert in_x_par(build, "X", end)
    assert not in_x_par(build, "X", end + 1)
    assert in_x_nonpar(build, "chrX", start - 1)
    assert not in_x_nonpar(build, "chrX", start)
    assert in_x_nonpar(build, "chrX", end + 1)


def test_the_published_coordinates_of_both_builds() -> None:
    assert PSEUDOAUTOSOMAL_REGIONS["GRCh38"] == (
        (10_001, 2_781_479),
        (155_701_383, 156_030_895),
    )
    assert PSEUDOAUTOSOMAL_REGIONS["GRCh37"] == ((60_001, 2_699_520), (154_931_044, 155_260_560))


def test_other_chromosomes_are_neither_par_nor_nonpar_x() -> None:
    for contig in ("chr1", "7", "chrY", "Y", "MT"):
        assert not in_x_par("GRCh38", contig, 100_000)
        assert not in_x_nonpar("GRCh38", contig, 100_000)


def test_contig_names_become_gwas_ssf_chromosomes() -> None:
    assert [bare_chromosome(c) for c in ("chr1", "chrX", "chrM", "M", "MT", "22")] == [
        "1",
        "X",
        "MT",
        "MT",
        "MT",
        "22",
    ]
