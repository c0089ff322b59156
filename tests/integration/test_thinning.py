"""Deterministic thinning by locus on a real Hail session: about the asked fraction is kept,
the same loci every time, spread over the genome; and the reference check's sampling, which
thins whenever a cohort has more variants than it samples, runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

N_LOCI = 200_000
SPACING = 15_000  # base pairs between consecutive loci: ~3.1e9 / 15,000 covers every contig


@pytest.fixture(scope="module")
def loci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    import hail as hl

    from federation.analyses.session import HailSettings, hail_session

    scratch: Path = tmp_path_factory.mktemp("thinning")
    with hail_session(HailSettings(tmp_dir=str(scratch)), stop_at_end=True):
        table = hl.utils.range_table(N_LOCI)
        table = table.annotate(
            locus=hl.locus_from_global_position(hl.int64(table.idx) * SPACING, "GRCh38"),
            alleles=["A", "C"],
        )
        yield table.key_by("locus", "alleles").cache()


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
def test_about_the_asked_fraction_of_loci_is_kept_on_every_contig(loci, fraction) -> None:
    import hail as hl

    from federation.analyses.thinning import keep_fraction_of_loci

    kept = loci.filter(keep_fraction_of_loci(loci.locus, fraction))
    per_contig = kept.aggregate(hl.agg.counter(kept.locus.contig))
    assert sum(per_contig.values()) == pytest.approx(fraction * N_LOCI, rel=0.1)
    assert len(per_contig) >= 22  # spread over the genome, not one end of it


def test_the_same_loci_are_kept_every_time(loci) -> None:
    from federation.analyses.thinning import keep_fraction_of_loci

    def kept() -> list[object]:
        thinned = loci.filter(keep_fraction_of_loci(loci.locus, 0.05))
        return thinned.locus.collect()

    assert kept() == kept()


def test_the_reference_check_samples_a_cohort_larger_than_its_sample(loci) -> None:
    import hail as hl

    from federation.analyses.reference import sampled_variants

    wanted = 2_000
    sampled = sampled_variants(hl.MatrixTable.from_rows_table(loci), wanted)
    assert len(sampled) == pytest.approx(wanted, rel=0.1)
    assert {ref for _, _, ref in sampled} == {"A"}
