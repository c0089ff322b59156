"""The identity of the pipeline code that ran on a node: named exactly, in every sidecar.

The package version alone (`federation 0.1.0`) says little: a checkout between releases, an
edited rule or another bundle all carry it. So a node's released sidecars also hold the SHA-256
of every workflow file that ran (the bundle's pipeline files, or the installed ones), their
workflow digest (what a node admin approves and a task envelope signs), the bundle's SHA-256
when a bundle ran, and the git commit when the code runs from a git checkout
(`versions.code_identity`; an installed package has none, and leaves the field out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from federation.files import REPO_ROOT, sha256_file
from federation.protocol.bundle import PIPELINE_PATTERNS, collect_files, pipeline_workflow_digest
from federation.versions import code_identity


def workflow_files(pipeline_root: Path) -> dict[str, str]:
    """SHA-256 of each pipeline file under `pipeline_root` (the bundle's patterns), by name."""
    files = collect_files(pipeline_root, PIPELINE_PATTERNS)
    return {name: sha256_file(path) for name, path in sorted(files.items())}


def pipeline_identity(
    pipeline_root: Path = REPO_ROOT, bundle_sha256: str | None = None
) -> dict[str, Any]:
    """The identity of the code that ran the pipeline at `pipeline_root`."""
    identity: dict[str, Any] = dict(code_identity())
    if bundle_sha256:
        identity["bundle_sha256"] = bundle_sha256
    if (pipeline_root / "Snakefile").is_file():
        identity["workflow_digest"] = pipeline_workflow_digest(pipeline_root)
        identity["workflow_files"] = workflow_files(pipeline_root)
    return identity
