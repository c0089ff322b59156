"""Software versions and code identity recorded in every output (reproducibility is a feature).

`software_versions` names the distributions whose versions change results; `code_identity`
names the package's own code: its version and, when it runs from a git checkout, the commit.
"""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

from federation import __version__, _tsv
from federation.files import REPO_ROOT

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


GIT_TIMEOUT_SECONDS = 5  # `git rev-parse` answers in milliseconds; a hung git never blocks a run
IDENTITY_KEY = "code_identity"  # the sidecar and crate field that holds `code_identity()`


@cache
def git_commit(root: Path = REPO_ROOT) -> str | None:
    """The commit checked out at `root` (with `+dirty` when tracked files changed), or None
    outside a git checkout (an installed package has none) or without git."""
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty and head else head or None


def code_identity() -> dict[str, str]:
    """The package that runs: its version and, from a git checkout, the commit. The pipeline's
    own files are named by `federation.provenance.identity.pipeline_identity`."""
    identity = {"federation_version": __version__}
    commit = git_commit()
    if commit:
        identity["git_commit"] = commit
    return identity
