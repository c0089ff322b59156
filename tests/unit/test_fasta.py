"""The REF-allele test of the genome-build check, on small FASTA files written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from federation.errors import SpecError
from federation.fasta import Fasta, build_refusal, mismatches

BASES = np.array(list("ACGT"))


def _sequence(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(BASES, length))


def write_fasta(path: Path, sequences: dict[str, str], width: int = 60, fai: bool = True) -> Path:
    """A FASTA of `sequences` wrapped at `width`, with a samtools-style .fai if asked."""
    lines, index, offset = [], [], 0
    for name, sequence in sequences.items():
        header = f">{name} synthetic\n"
        offset += len(header)
        body = "".join(sequence[i : i + width] + "\n" for i in range(0, len(sequence), width))
        index.append(f"{name}\t{len(sequence)}\t{offset}\t{width}\t{width + 1}\n")
        lines += [header, body]
        offset += len(body)
    path.write_text("".join(lines))
    if fai:
        Path(f"{path}.fai").write_text("".join(index))
    return path


@pytest.mark.parametrize("indexed", [True, False])
def test_bases_are_read_across_line_breaks_with_or_without_an_index(tmp_path, indexed):
    rng = np.random.default_rng(1)
    chr1, chr2 = _sequence(rng, 1000), _sequence(rng, 333)
    fasta = Fasta(write_fasta(tmp_path / "ref.fa", {"chr1": chr1, "chr2": chr2}, 60, indexed))
    for position in (1, 59, 60, 61, 120, 999, 1000):
        assert fasta.bases("1", position, 1) == chr1[position - 1]
    assert fasta.bases("chr2", 58, 5) == chr2[57:62]  # spans a line break
    assert fasta.bases("2", 333, 1) == chr2[-1]


def test_positions_and_contigs_outside_the_fasta_read_as_none(tmp_path):
    fasta = Fasta(write_fasta(tmp_path / "ref.fa", {"1": "ACGTACGT"}))
    assert fasta.bases("1", 9, 1) is None and fasta.bases("1", 0, 1) is None
    assert fasta.bases("1", 7, 3) is None  # runs past the end
    assert fasta.bases("7", 1, 1) is None
    assert fasta.bases("chr1", 2, 3) == "CGT"  # 'chr1' and '1' are one contig


def test_a_missing_fasta_is_one_line_naming_the_field(tmp_path):
    with pytest.raises(SpecError, match="'reference_fasta': '.*nope.fa' not found"):
        Fasta(tmp_path / "nope.fa")


def test_mismatches_count_differences_and_lowercase_is_the_same_base(tmp_path):
    fasta = Fasta(write_fasta(tmp_path / "ref.fa", {"1": "acgtACGT"}))
    variants = [("1", 1, "A"), ("1", 2, "c"), ("1", 3, "T"), ("1", 7, "GT"), ("1", 99, "A")]
    assert mismatches(fasta, variants) == (2, 5)  # position 3 is G; 99 is outside


@pytest.mark.parametrize(("differ", "refused"), [(19, False), (20, False), (21, True)])
def test_the_build_is_refused_above_the_mismatch_rate_only(differ, refused):
    """max 2% of 1,000 sampled: 19 and 20 pass, 21 is refused naming the likely build."""
    message = build_refusal("GRCh38", differ, 1000, 0.02, Path("/ref/GRCh38.fa"))
    assert (message is not None) is refused
    if message:
        assert "not GRCh38 (likely GRCh37)" in message and "GRCh38.fa" in message
        assert "21 of 1000" in message and "\n" not in message


def test_nothing_checked_is_not_a_refusal():
    assert build_refusal("GRCh37", 0, 0, 0.02, Path("x.fa")) is None
