"""The GWAS-SSF contract (GWAS Catalog summary-statistics standard) shared by nodes and coordinator.

GWAS-SSF fixes the first eight columns and their order; `n` and `variant_id` follow, then
extras. Files are tab-separated and BGZF-compressed (`.tsv.gz`, blocked gzip: any gzip reader
reads them, tabix indexes them) with a tabix index `<file>.tbi`, and carry a YAML metadata
sidecar named `<file>-meta.yaml` (the GWAS-SSF name, which `gwas-ssf validate` looks for).
This module owns the column names, the `variant_id` convention, the writer, the reader and the
one place sidecars are found by name (`sidecar_path`, `find_sidecar`), so that node releases
and coordinator outputs cannot drift apart.
"""

from __future__ import annotations

import datetime
import hashlib
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from isal import isal_zlib

from federation.errors import SpecError
from federation.files import READ_BLOCK, atomic_path, atomic_write
from federation.yamlio import load_yaml

if TYPE_CHECKING:  # pandas is imported where tables are read: the meta-analysis never needs it
    import pandas as pd

# The GWAS-SSF mandatory columns, in the order the standard requires.
MANDATORY_COLUMNS: tuple[str, ...] = (
    "chromosome",
    "base_pair_location",
    "effect_allele",
    "other_allele",
    "beta",
    "standard_error",
    "effect_allele_frequency",
    "p_value",
)
# Columns this project always writes right after the mandatory ones.
STANDARD_EXTRAS: tuple[str, ...] = ("n", "variant_id")
# -log10 p, written because p itself can underflow float64 far out in the tail.
NEG_LOG10_P = "neg_log_10_p_value"
# Extra columns of a meta-analysis output.
META_EXTRAS: tuple[str, ...] = (
    "n_studies",
    "direction",
    "het_q",
    "het_df",
    "het_p",
    "i2",
    "tau2",
)
# Both models are in every meta output, each once: the primary columns (beta, standard_error,
# p_value) hold the model the sidecar names (`primary_model`), these hold the other one.
RANDOM_EFFECTS_COLUMNS: tuple[str, ...] = ("beta_random", "se_random", "p_random")
FIXED_EFFECTS_COLUMNS: tuple[str, ...] = ("beta_fixed", "se_fixed", "p_fixed")
# The allele-frequency table, one row per variant per node plus a pooled row.
ALLELE_FREQUENCY_COLUMNS: tuple[str, ...] = (
    "chromosome",
    "base_pair_location",
    "ref",
    "alt",
    "variant_id",
    "allele_count",
    "allele_number",
    "allele_frequency",
    "n_samples",
)
# Binary traits: the case and control counts of each row's analysis (GWAS-SSF extras).
CASE_CONTROL_COLUMNS: tuple[str, ...] = ("n_cases", "n_controls")
# The sidecar field by which a release declares that its other/effect alleles are REF/ALT of
# its genome_assembly (so its strand is known: the meta-analysis keeps its A/T and C/G SNPs).
REFERENCE_ALIGNED = "reference_aligned"
# Optional dbSNP identifier, written when the node config names a dbSNP VCF.
RSID = "rsid"
# GWAS-SSF's sidecar name is `<file>-meta.yaml`; files written before it were `<file>.yaml`,
# which readers still find (`find_sidecar`).
SIDECAR_SUFFIX = "-meta.yaml"
LEGACY_SIDECAR_SUFFIX = ".yaml"
TABIX_SUFFIX = ".tbi"
# GWAS-SSF chromosome codes (integers 1-25): what the chromosome column and `variant_id` hold.
CHROMOSOME_CODES: dict[str, int] = {str(i): i for i in range(1, 26)} | {
    "X": 23,
    "Y": 24,
    "M": 25,
    "MT": 25,
}
VARIANT_ID_SEPARATOR = "_"  # gwas-ssf validate wants variant_id to match [A-Za-z0-9_]+
# BGZF (SAM/BAM specification, section 4.1): gzip members of at most 64 KiB, each with a `BC`
# extra field holding its size, and an empty member at the end. 0xff00 bytes of input always
# fit one block, even stored uncompressed (htslib's BGZF_BLOCK_SIZE).
BGZF_INPUT_BYTES = 0xFF00
BGZF_MAX_BLOCK = 1 << 16
BGZF_LEVEL = 1  # ISA-L level 1: fast, a few % larger than its best ratio
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
# GWAS Catalog metadata fields (gwas-sumstats-tools `SumStatsMetadata`) a sidecar fills in;
# the project's own fields (study_id, node_id, model, QC counts, ...) follow them.
GWAS_CATALOG_FILE_TYPE = "GWAS-SSF v1.0"


def chromosome_code(chromosome: pd.Series) -> pd.Series:
    """GWAS-SSF chromosome codes: `chr` prefix dropped, X=23, Y=24, MT=25 (unknown kept as is)."""
    names = chromosome.astype(str).str.upper().str.removeprefix("CHR")
    return (
        names.map(CHROMOSOME_CODES)
        .astype("Int64")
        .astype(str)
        .where(names.isin(list(CHROMOSOME_CODES)), names)
    )


def variant_id(
    chromosome: pd.Series, position: pd.Series, ref: pd.Series, alt: pd.Series
) -> pd.Series:
    """`chr_pos_ref_alt` identifiers (GWAS-SSF chromosome codes, alternate allele last): the
    one convention of node and meta files, which `gwas-ssf validate` accepts."""
    sep = VARIANT_ID_SEPARATOR
    return (
        chromosome_code(chromosome)
        + sep
        + position.astype(str)
        + sep
        + ref.astype(str)
        + sep
        + alt.astype(str)
    )


def format_p_value(p: np.ndarray, neg_log10_p: np.ndarray) -> list[str]:
    """Write p so that values below the float64 range survive: from -log10 p as `m e-k`."""
    out: list[str] = []
    for value, nlp in zip(p, neg_log10_p, strict=True):
        if np.isnan(nlp):
            out.append("NA")
        elif value > 0 and nlp < 300:
            out.append(f"{value:.6g}")
        else:
            exponent = np.floor(nlp)
            mantissa = 10 ** (exponent - nlp)
            if mantissa < 1:
                mantissa *= 10
                exponent += 1
            out.append(f"{mantissa:.5f}e-{int(exponent)}")
    return out


@dataclass(frozen=True)
class TableDigests:
    """The digests a sidecar records of its table: MD5 for the GWAS Catalog, SHA-256 for us."""

    md5: str
    sha256: str

    @classmethod
    def of_file(cls, path: Path) -> TableDigests:
        md5, sha256 = hashlib.md5(), hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(READ_BLOCK), b""):
                md5.update(block)
                sha256.update(block)
        return cls(md5.hexdigest(), sha256.hexdigest())


def bgzf_blocks(data: bytes, level: int = BGZF_LEVEL) -> bytes:
    """`data` as BGZF blocks (no end-of-file block): gzip members with mtime 0 and the `BC`
    extra field, each of at most BGZF_INPUT_BYTES of input, so equal text gives equal bytes
    and independently compressed pieces concatenate into one valid file."""
    out = bytearray()
    for start in range(0, len(data), BGZF_INPUT_BYTES):
        chunk = data[start : start + BGZF_INPUT_BYTES]
        deflated = _raw_deflate(chunk, level)
        if len(deflated) + 26 > BGZF_MAX_BLOCK:  # incompressible: stored fits by construction
            deflated = _raw_deflate(chunk, 0)
        header = struct.pack(
            "<4BI2BH2BHH", 0x1F, 0x8B, 8, 4, 0, 0, 0xFF, 6, 66, 67, 2, len(deflated) + 25
        )
        out += header + deflated + struct.pack("<II", zlib.crc32(chunk), len(chunk))
    return bytes(out)


def _raw_deflate(data: bytes, level: int) -> bytes:
    """Raw deflate (no wrapper): ISA-L, or zlib for level 0 (stored), which ISA-L lacks."""
    if level == 0:
        stored = zlib.compressobj(0, zlib.DEFLATED, -15)
        return stored.compress(data) + stored.flush()
    compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def tabix_index(path: Path) -> Path:
    """Build `<path>.tbi` (tabix, htslib via pysam) over chromosome and base_pair_location, the
    first two columns, skipping the header line; written aside and renamed."""
    import pysam

    index = path.with_name(path.name + TABIX_SUFFIX)
    with atomic_path(index) as tmp:
        pysam.tabix_index(
            str(path),
            seq_col=0,
            start_col=1,
            end_col=1,
            line_skip=1,
            zerobased=False,
            force=True,
            index=str(tmp),
        )
    return index


def write_table(
    frame: pd.DataFrame,
    path: Path,
    metadata: Mapping[str, Any] | None = None,
    float_format: str | None = None,
) -> Path:
    """Write a BGZF `.tsv.gz` (NA for missing), its tabix index and, when given, its YAML
    sidecar; atomically.

    The file is written under a temporary name and renamed, so a reader never sees half a table.
    BGZF headers carry no timestamp, so identical tables give identical bytes. The rows must be
    sorted by chromosome and position (tabix refuses them otherwise).
    """
    if not path.name.endswith(".tsv.gz"):
        raise SpecError(f"output '{path}': must end in .tsv.gz (GWAS-SSF); rename it")
    text = frame.to_csv(
        sep="\t", index=False, na_rep="NA", lineterminator="\n", float_format=float_format
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        raw.write(bgzf_blocks(text.encode()))
        raw.write(BGZF_EOF)
    tabix_index(path)
    if metadata is not None:
        write_sidecar(path, metadata)
    return path


def table_files(table_path: Path) -> tuple[Path, Path, Path]:
    """The files of one released or meta table: the table, its tabix index, its sidecar."""
    return (
        table_path,
        table_path.with_name(table_path.name + TABIX_SUFFIX),
        sidecar_path(table_path),
    )


def write_sidecar(
    table_path: Path, metadata: Mapping[str, Any], digests: TableDigests | None = None
) -> Path:
    """`<table>-meta.yaml`: `metadata` plus the table's name and digests (given when the writer
    took them while writing, else read from the file), GWAS Catalog fields first."""
    sidecar = sidecar_path(table_path)
    digests = digests or TableDigests.of_file(table_path)
    document: dict[str, Any] = {"file_type": GWAS_CATALOG_FILE_TYPE}
    document.update(metadata)
    document.setdefault("data_file_name", table_path.name)
    document["data_file_md5sum"] = digests.md5
    document["data_file_sha256"] = digests.sha256
    atomic_write(sidecar, yaml.safe_dump(document, sort_keys=False))
    return sidecar


def sidecar_path(table_path: Path) -> Path:
    """Where the sidecar of `table_path` is written: `<file>-meta.yaml` (GWAS-SSF)."""
    return table_path.with_name(table_path.name + SIDECAR_SUFFIX)


def is_sidecar(path: Path) -> bool:
    """Whether `path` is a table's sidecar, under the GWAS-SSF name or the older one."""
    return path.name.endswith(SIDECAR_SUFFIX) or path.name.endswith(
        ".tsv.gz" + LEGACY_SIDECAR_SUFFIX
    )


def find_sidecar(table_path: Path) -> Path | None:
    """The sidecar of `table_path` on disk: `<file>-meta.yaml`, else the older `<file>.yaml`."""
    for candidate in (
        sidecar_path(table_path),
        table_path.with_name(table_path.name + LEGACY_SIDECAR_SUFFIX),
    ):
        if candidate.is_file():
            return candidate
    return None


def read_sidecar(table_path: Path) -> dict[str, Any]:
    """The sidecar of `table_path` as a mapping; {} when it has none."""
    sidecar = find_sidecar(table_path)
    if sidecar is None:
        return {}
    loaded = load_yaml(sidecar.read_bytes())
    return loaded if isinstance(loaded, dict) else {}


def gwas_catalog_fields(
    *,
    genome_assembly: str | None,
    trait: str | None,
    covariates: Sequence[str] = (),
    n: int | None = None,
    n_cases: int | None = None,
    n_controls: int | None = None,
    analysis_software: str | None = None,
    is_harmonised: bool = False,
) -> dict[str, Any]:
    """The GWAS Catalog metadata fields (gwas-sumstats-tools `SumStatsMetadata`) a sidecar
    can fill in itself; data_file_name and its MD5 are added by `write_sidecar`."""
    sample: dict[str, Any] = {"sample_size": n}
    if n_cases is not None or n_controls is not None:
        sample.update(case_control_study=True, case_count=n_cases, control_count=n_controls)
    fields: dict[str, Any] = {
        "file_type": GWAS_CATALOG_FILE_TYPE,
        "genome_assembly": genome_assembly or "NR",
        "coordinate_system": "1-based",
        "trait_description": [trait] if trait else None,
        "samples": [sample] if n is not None else None,
        "analysis_software": analysis_software,
        "adjusted_covariates": list(covariates) or None,
        "is_harmonised": is_harmonised,
        "is_sorted": True,
        "date_metadata_last_modified": datetime.date.today().isoformat(),
    }
    return {key: value for key, value in fields.items() if value is not None}


def read_table(path: Path) -> pd.DataFrame:
    """Read a GWAS-SSF (or allele-frequency) table; alleles and chromosome stay strings."""
    if not path.exists():
        raise SpecError(f"input '{path}': file not found; check the path")
    import pandas as pd

    return pd.read_csv(
        path,
        sep="\t",
        na_values=["NA", "NaN", "nan", ""],
        keep_default_na=False,
        dtype={
            "chromosome": str,
            "effect_allele": str,
            "other_allele": str,
            "ref": str,
            "alt": str,
            "variant_id": str,
        },
        low_memory=False,
    )
