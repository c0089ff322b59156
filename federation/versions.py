"""Software versions recorded in every output (reproducibility is a feature)."""

from __future__ import annotations

import platform
from functools import cache
from importlib import metadata

from federation import _tsv

# Distributions whose versions change results or their provenance.
RECORDED_DISTRIBUTIONS = (
    "federation",
    "hail",
    "pyspark",
    "snakemake",
    "cwltool",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",  # the meta-analysis scratch files and allele tables
    "isal",  # its gzip bytes are the meta-analysis output's bytes
)


@cache
def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in RECORDED_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    # The C++ kernels that parse the meta-analysis inputs and format its numbers.
    versions["federation._tsv"] = _tsv.COMPILER
    return versions
