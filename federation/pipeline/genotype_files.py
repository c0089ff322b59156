"""Which genotype format a node's file is, checked from its first bytes (no Hail here).

A node config names the format (`vcf`, `plink`, `bgen`, `hail`) or asks for `auto`. Either
way the file must look like what it claims: a wrong or truncated file is refused in a second
with a one-line message, before a JVM starts and fails minutes later on a stack trace.
BGEN needs the sample file that names its samples (Oxford `.sample`): BGEN 1.2 may carry
sample IDs itself, but imputation servers write them beside it, and without them the
phenotypes cannot be matched.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from federation.errors import SpecError

FORMATS = ("vcf", "plink", "bgen", "hail")
VCF_SIGNATURE = b"##fileformat=VCF"
GZIP_MAGIC = b"\x1f\x8b"
PLINK_BED_MAGIC = b"\x6c\x1b\x01"  # PLINK 1 .bed, variant-major (the only mode PLINK 2 writes)
# BGEN 1.2: a 4-byte offset, then the header block: length, M, N (4 bytes each) and the
# magic number "bgen" (or four zero bytes, which the specification also allows).
BGEN_MAGIC_AT = slice(16, 20)
BGEN_MAGICS = (b"bgen", b"\x00\x00\x00\x00")
HAIL_METADATA = "metadata.json.gz"
LABEL = "node config 'genotypes.path'"


def _head(path: Path, size: int = 64) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError as error:
        raise SpecError(
            f"{LABEL}: cannot read '{path}' ({error.strerror}); check the path"
        ) from None


def _is_vcf(path: Path) -> bool:
    head = _head(path)
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(len(VCF_SIGNATURE))
        except (OSError, EOFError, zlib.error):
            return False
    return head.startswith(VCF_SIGNATURE)


def _is_bgen(path: Path) -> bool:
    return _head(path)[BGEN_MAGIC_AT] in BGEN_MAGICS


def plink_bed(path: Path) -> Path:
    """The .bed of a PLINK fileset given as its prefix or as the .bed itself."""
    return Path(str(path).removesuffix(".bed") + ".bed")


def detect_format(path: Path) -> str:
    """The format of a genotype file or directory, from its content; SpecError if none fits."""
    if path.is_dir():
        if (path / HAIL_METADATA).is_file():
            return "hail"
        raise SpecError(
            f"{LABEL}: '{path}' is a directory but not a Hail MatrixTable (no {HAIL_METADATA}); "
            "give the MatrixTable directory or a genotype file"
        )
    bed = plink_bed(path)
    if not path.exists() and bed.is_file():
        path = bed
    if not path.is_file():
        raise SpecError(f"{LABEL}: '{path}' not found; check the path")
    if _head(path).startswith(PLINK_BED_MAGIC):
        return "plink"
    if _is_bgen(path):
        return "bgen"
    if _is_vcf(path):
        return "vcf"
    raise SpecError(
        f"{LABEL}: '{path}' is not a VCF, BGEN 1.2, PLINK .bed or Hail MatrixTable; "
        "check the file (a VCF starts with '##fileformat=VCF', bgzip-compressed or not)"
    )


def check_format(declared: str, path: Path) -> str:
    """The format to read `path` as: `declared`, or detected for `auto`, refused on mismatch."""
    found = detect_format(path)
    if declared not in ("auto", found):
        raise SpecError(
            f"node config 'genotypes.format': '{declared}' but '{path}' is a {found} file; "
            f"write format: {found} (or auto)"
        )
    return found


def bgen_sample_file(path: Path, sample: Path | None) -> Path:
    """The .sample file of a BGEN: the configured one, or the BGEN's name with .sample."""
    candidate = sample or path.with_suffix(".sample")
    if not candidate.is_file():
        raise SpecError(
            f"node config 'genotypes.sample': BGEN sample file '{candidate}' not found; "
            "put the .sample beside the .bgen or name it in genotypes.sample"
        )
    return candidate


def bgen_sample_ids(sample: Path) -> list[str]:
    """Sample IDs (first column) of an Oxford .sample file, after its two header lines."""
    lines = [line.split() for line in sample.read_text().splitlines() if line.strip()]
    if len(lines) < 2 or lines[0][:1] != ["ID_1"] or len(lines[1]) != len(lines[0]):
        raise SpecError(
            f"node config 'genotypes.sample': '{sample}' is not an Oxford .sample file "
            "(first line 'ID_1 ID_2 ...', second the column types); check the file"
        )
    return [fields[0] for fields in lines[2:]]
