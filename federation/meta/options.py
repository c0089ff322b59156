"""The choices a meta-analysis run takes (shared by the runner, the bin workers and the record)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from federation.errors import SpecError
from federation.stats import harmonize


class Scheme(StrEnum):
    IVW = "ivw"
    SAMPLE_SIZE = "sample-size"


@dataclass(frozen=True)
class MetaOptions:
    random_effects: bool = False
    genomic_control: bool = False
    scheme: Scheme = Scheme.IVW
    palindromic_maf_band: tuple[float, float] = harmonize.DEFAULT_PALINDROMIC_MAF_BAND
    # For inputs without a sidecar only (`--assume-build`, `--trait-type`): what they are taken
    # to be. Inputs with a sidecar are judged by what it declares.
    assume_build: str | None = None
    trait_type: str | None = None


def parse_maf_band(text: str) -> tuple[float, float]:
    """'0.4-0.6' -> (0.4, 0.6); SpecError naming the option otherwise."""
    try:
        low_text, high_text = text.split("-", 1)
        low, high = float(low_text), float(high_text)
    except ValueError:
        low, high = float("nan"), float("nan")
    if not (0.0 <= low <= 0.5 <= high <= 1.0):
        raise SpecError(
            f"--palindromic-maf-band '{text}': not LOW-HIGH with 0 <= LOW <= 0.5 <= HIGH <= 1; "
            "use e.g. 0.4-0.6"
        )
    return low, high
