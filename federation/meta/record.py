"""The record of a meta-analysis run: the YAML sidecar next to its GWAS-SSF output.

The sidecar carries the GWAS Catalog metadata fields (file_type, genome_assembly,
coordinate_system, samples, data_file_name, data_file_md5sum, ...) and this project's own: the
inputs with their SHA-256, build, trait type and alignment, rows read/used/dropped per reason,
allele swaps and strand flips, λGC per input and for the meta-analysis, which model the primary
columns hold (`primary_model`) and where the other one is (`columns`), and software versions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.meta.inputs import InputDeclaration
from federation.meta.spill import InputScan
from federation.sumstats import (
    FIXED_EFFECTS_COLUMNS,
    RANDOM_EFFECTS_COLUMNS,
    TableDigests,
    gwas_catalog_fields,
    read_sidecar,
    write_sidecar,
)
from federation.versions import IDENTITY_KEY, code_identity, software_versions

if TYPE_CHECKING:
    from federation.meta.options import MetaOptions

FIXED_MODEL = "fixed-effects (inverse-variance)"
RANDOM_MODEL = "random-effects (DerSimonian-Laird)"


@dataclass
class InputTally:
    """Per-input counts that grow bin by bin."""

    dropped: dict[str, int] = field(default_factory=dict)
    allele_swaps: int = 0
    strand_flips: int = 0
    rows_used: int = 0

    def add_drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)


class HashingSink:
    """A file that also digests what is written (MD5 for the GWAS Catalog, SHA-256 for us), so
    the output is never read back whole to be hashed."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.md5 = hashlib.md5()
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.raw.write(data)
        self.md5.update(data)
        self.sha256.update(data)


def write_meta_sidecar(out: Path, metadata: dict[str, Any], sink: HashingSink) -> Path:
    """The output's sidecar, with the digests taken while the output was written."""
    digests = TableDigests(sink.md5.hexdigest(), sink.sha256.hexdigest())
    return write_sidecar(out, metadata, digests)


def agreed(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return present[0] if present and all(v == present[0] for v in present) else None


def build_sidecar(
    scans: list[InputScan],
    declarations: list[InputDeclaration],
    tallies: list[InputTally],
    options: MetaOptions,
    n_variants: int,
    lambda_gc: float,
) -> dict[str, Any]:
    input_meta = [read_sidecar(s.path) for s in scans]
    primary, other = (
        (RANDOM_MODEL, FIXED_MODEL) if options.random_effects else (FIXED_MODEL, RANDOM_MODEL)
    )
    other_columns = FIXED_EFFECTS_COLUMNS if options.random_effects else RANDOM_EFFECTS_COLUMNS
    versions = software_versions()
    trait = agreed([m.get("trait") for m in input_meta])
    catalog = gwas_catalog_fields(
        genome_assembly=declarations[0].genome_assembly if declarations else None,
        trait=trait,
        covariates=agreed([m.get("covariates") for m in input_meta]) or (),
        n=_summed([m.get("n") for m in input_meta]),
        n_cases=_summed([m.get("n_cases") for m in input_meta]),
        n_controls=_summed([m.get("n_controls") for m in input_meta]),
        analysis_software=f"federation {versions.get('federation', '?')} meta",
    )
    return {
        **catalog,
        "study_id": agreed([m.get("study_id") for m in input_meta]),
        "node_id": "coordinator",
        "analysis": agreed([m.get("analysis") for m in input_meta]) or "meta-analysis",
        "trait": trait,
        "trait_type": declarations[0].trait_type if declarations else None,
        "model": primary,
        "primary_model": primary,
        "columns": {
            primary: ["beta", "standard_error", "p_value"],
            other: list(other_columns),
        },
        "scheme": options.scheme.value,
        "p_value_source": (
            "Stouffer's Z weighted by sqrt(n); beta/standard_error are inverse-variance"
            if options.scheme.value == "sample-size"
            else "z = beta / standard_error, two-sided normal"
        ),
        "genomic_control": options.genomic_control,
        "palindromic_maf_band": list(options.palindromic_maf_band),
        "palindromic_rule": (
            "A/T and C/G SNPs of reference-aligned inputs are kept; those of other inputs are "
            "placed by frequency and dropped inside palindromic_maf_band"
        ),
        "n_variants": n_variants,
        "lambda_gc": round(float(lambda_gc), 6),
        "inputs": [
            {
                "path": str(scan.path),
                "sha256": scan.sha256,
                "node_id": meta_.get("node_id"),
                "genome_assembly": declaration.genome_assembly,
                "trait_type": declaration.trait_type,
                "reference_aligned": declaration.reference_aligned,
                "sidecar": declaration.sidecar is not None,
                "rows_read": scan.rows_read,
                "rows_used": tally.rows_used,
                "dropped": dict(sorted(tally.dropped.items())),
                "allele_swaps": tally.allele_swaps,
                "strand_flips": tally.strand_flips,
                "lambda_gc": round(float(scan.lambda_gc), 6),
                "se_inflation_applied": options.genomic_control and scan.lambda_gc > 1,
            }
            for scan, declaration, tally, meta_ in zip(
                scans, declarations, tallies, input_meta, strict=True
            )
        ],
        "software_versions": versions,
        IDENTITY_KEY: code_identity(),
    }


def _summed(values: list[Any]) -> int | None:
    """The total of a count every input states (n, cases, controls); None if one lacks it."""
    if not values or any(not isinstance(value, int) for value in values):
        return None
    return int(sum(values))
