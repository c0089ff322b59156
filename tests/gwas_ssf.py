"""The GWAS Catalog's own tools, run on our files by the tests: `gwas-ssf validate` and the
gwas-sumstats-tools metadata model, both from `.venv-ssf` (scripts/bootstrap.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from federation.files import REPO_ROOT

GWAS_SSF = REPO_ROOT / ".venv-ssf" / "bin" / "gwas-ssf"
# The validator reads the data with pandera; its import warning is noise here.
ENVIRONMENT = {"DISABLE_PANDERA_IMPORT_WARNING": "True", "PATH": "/usr/bin:/bin"}
METADATA_CHECK = (
    "import sys, yaml\n"
    "from gwas_sumstats_tools.schema.metadata import SumStatsMetadata\n"
    "meta = SumStatsMetadata(**yaml.safe_load(open(sys.argv[1])))\n"
    "print(meta.file_type, meta.data_file_name, meta.genome_assembly)\n"
)


def validate(path: Path, min_rows: int = 1) -> str:
    """Run `gwas-ssf validate` (with the `-meta.yaml` sidecar it infers options from); return its
    output; AssertionError with the output if it fails."""
    done = subprocess.run(
        [str(GWAS_SSF), "validate", str(path), "--min-rows", str(min_rows), "-i"],
        capture_output=True,
        text=True,
        env=ENVIRONMENT,
    )
    assert done.returncode == 0 and "Validation status: True" in done.stdout, (
        done.stdout[-2000:] + done.stderr[-2000:]
    )
    return done.stdout


def metadata_fields(sidecar: Path) -> list[str]:
    """The sidecar read by the GWAS Catalog's metadata model: file_type (two words),
    data_file_name, genome_assembly; AssertionError if the model refuses it."""
    done = subprocess.run(
        [str(GWAS_SSF.parent / "python"), "-c", METADATA_CHECK, str(sidecar)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()
