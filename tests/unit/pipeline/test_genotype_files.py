"""Genotype formats told from the files' first bytes, and one-line refusals of bad ones."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

from federation.errors import SpecError
from federation.pipeline.genotype_files import (
    PLINK_BED_MAGIC,
    bgen_sample_file,
    bgen_sample_ids,
    check_format,
    detect_format,
)


def bgen_header(path: Path, magic: bytes = b"bgen") -> Path:
    """The first 20 bytes of a BGEN 1.2 file: offset, header length, M, N, magic."""
    path.write_bytes(struct.pack("<IIII", 20, 20, 3, 2) + magic + b"\x00" * 8)
    return path


def vcf(path: Path, compress: bool) -> Path:
    text = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ta\n"
    if compress:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def test_each_format_is_recognised_by_its_content(tmp_path: Path) -> None:
    assert detect_format(vcf(tmp_path / "g.vcf.bgz", compress=True)) == "vcf"
    assert detect_format(vcf(tmp_path / "g.vcf", compress=False)) == "vcf"
    assert detect_format(bgen_header(tmp_path / "g.bgen")) == "bgen"
    assert detect_format(bgen_header(tmp_path / "z.bgen", magic=b"\x00" * 4)) == "bgen"
    (tmp_path / "p.bed").write_bytes(PLINK_BED_MAGIC + b"\x00")
    assert detect_format(tmp_path / "p") == "plink"  # the prefix, as --bfile takes it
    assert detect_format(tmp_path / "p.bed") == "plink"
    (tmp_path / "cohort.mt").mkdir()
    (tmp_path / "cohort.mt" / "metadata.json.gz").write_bytes(b"")
    assert detect_format(tmp_path / "cohort.mt") == "hail"


def test_a_file_of_no_known_format_is_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "genotypes.vcf.gz"
    with gzip.open(bad, "wt") as handle:
        handle.write("chr1\t1000\tA\tG\n")
    with pytest.raises(SpecError) as error:
        detect_format(bad)
    message = str(error.value)
    assert "\n" not in message
    assert "genotypes.path" in message and str(bad) in message and "is not a VCF" in message


def test_a_declared_format_that_the_file_contradicts_names_the_right_one(tmp_path: Path) -> None:
    path = bgen_header(tmp_path / "imputed.vcf.gz")
    with pytest.raises(
        SpecError, match=r"'genotypes.format': 'vcf' but .* is a bgen file; write format: bgen"
    ):
        check_format("vcf", path)
    assert check_format("auto", path) == "bgen"
    assert check_format("bgen", path) == "bgen"


def test_missing_files_and_plain_directories_are_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"'genotypes.path': '.*absent.bgen' not found"):
        detect_format(tmp_path / "absent.bgen")
    with pytest.raises(SpecError, match="not a Hail MatrixTable"):
        detect_format(tmp_path)


def test_a_bgen_without_its_sample_file_is_refused_naming_the_expected_path(tmp_path: Path) -> None:
    bgen = bgen_header(tmp_path / "chr20.bgen")
    with pytest.raises(SpecError) as error:
        bgen_sample_file(bgen, None)
    assert "genotypes.sample" in str(error.value) and str(tmp_path / "chr20.sample") in str(
        error.value
    )
    (tmp_path / "chr20.sample").write_text("ID_1 ID_2 missing sex\n0 0 0 D\ns1 s1 0 1\ns2 s2 0 2\n")
    assert bgen_sample_file(bgen, None) == tmp_path / "chr20.sample"
    assert bgen_sample_ids(tmp_path / "chr20.sample") == ["s1", "s2"]


def test_a_sample_file_that_is_not_oxford_format_is_refused(tmp_path: Path) -> None:
    sample = tmp_path / "x.sample"
    sample.write_text("sample_id\ts1\n")
    with pytest.raises(SpecError, match="not an Oxford .sample file"):
        bgen_sample_ids(sample)
