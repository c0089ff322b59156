"""The GWAS-SSF contract (GWAS Catalog summary-statistics standard) shared by nodes and coordinator.

GWAS-SSF fixes the first eight columns and their order; `n` and `variant_id` follow, then
extras. Files are tab-separated, gzip-compressed (`.tsv.gz`) and carry a YAML metadata
sidecar named `<file>.yaml`. This module owns the column names, the writer and the reader
so that node releases and coordinator outputs cannot drift apart.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

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
    "beta_random",
    "se_random",
    "p_random",
)
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
SIDECAR_SUFFIX = ".yaml"


def variant_id(
    chromosome: pd.Series, position: pd.Series, ref: pd.Series, alt: pd.Series
) -> pd.Series:
    """`chr:pos:ref:alt` identifiers, chromosome without a `chr` prefix as GWAS-SSF wants."""
    return (
        chromosome.astype(str)
        + ":"
        + position.astype(str)
        + ":"
        + ref.astype(str)
        + ":"
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


def write_table(
    frame: pd.DataFrame,
    path: Path,
    metadata: Mapping[str, Any] | None = None,
    float_format: str | None = None,
) -> Path:
    """Write a `.tsv.gz` (NA for missing) and, when given, its YAML sidecar; atomically.

    The file is written under a temporary name and renamed, so a reader never sees half a table.
    gzip's header timestamp is zeroed so identical tables give identical bytes.
    """
    if not path.name.endswith(".tsv.gz"):
        raise SpecError(f"output '{path}': must end in .tsv.gz (GWAS-SSF); rename it")
    text = frame.to_csv(
        sep="\t", index=False, na_rep="NA", lineterminator="\n", float_format=float_format
    )
    with (
        atomic_path(path) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,
    ):
        gz.write(text.encode())
    if metadata is not None:
        write_sidecar(path, metadata)
    return path


def write_sidecar(
    table_path: Path, metadata: Mapping[str, Any], digests: TableDigests | None = None
) -> Path:
    """`<table>.yaml`: `metadata` plus the table's name and digests (given when the writer
    took them while writing, else read from the file)."""
    sidecar = sidecar_path(table_path)
    digests = digests or TableDigests.of_file(table_path)
    document = dict(metadata)
    document.setdefault("data_file_name", table_path.name)
    document["data_file_md5sum"] = digests.md5
    document["data_file_sha256"] = digests.sha256
    atomic_write(sidecar, yaml.safe_dump(document, sort_keys=False))
    return sidecar


def sidecar_path(table_path: Path) -> Path:
    return table_path.with_name(table_path.name + SIDECAR_SUFFIX)


def read_sidecar(table_path: Path) -> dict[str, Any]:
    sidecar = sidecar_path(table_path)
    if not sidecar.exists():
        return {}
    loaded = load_yaml(sidecar.read_bytes())
    return loaded if isinstance(loaded, dict) else {}


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
