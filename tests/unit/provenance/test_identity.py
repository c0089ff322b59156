"""Code identity and the sidecars it is written into."""

from __future__ import annotations

from pathlib import Path

import yaml

from federation import __version__
from federation.files import REPO_ROOT, sha256_file
from federation.protocol.bundle import pipeline_workflow_digest
from federation.provenance.identity import pipeline_identity
from federation.provenance.sidecars import add_to_sidecars, find_sidecar, sidecars_in
from federation.versions import code_identity, git_commit


def test_the_pipeline_identity_names_version_bundle_workflow_digest_and_each_file() -> None:
    identity = pipeline_identity(REPO_ROOT, bundle_sha256="ab" * 32)
    assert identity["federation_version"] == __version__
    assert identity["bundle_sha256"] == "ab" * 32
    assert identity["workflow_digest"] == pipeline_workflow_digest(REPO_ROOT)
    assert identity["workflow_files"]["Snakefile"] == sha256_file(REPO_ROOT / "Snakefile")


def test_the_git_commit_is_named_only_in_a_checkout(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None
    if (REPO_ROOT / ".git").exists():
        commit = code_identity()["git_commit"]
        assert len(commit.removesuffix("+dirty")) == 40


def test_sidecars_are_found_under_either_name(tmp_path: Path) -> None:
    old, new = tmp_path / "a.tsv.gz", tmp_path / "b.tsv.gz"
    (tmp_path / "a.tsv.gz.yaml").write_text("analysis: a\n")
    (tmp_path / "b.tsv.gz-meta.yaml").write_text("analysis: b\n")
    (tmp_path / "qc_metrics.json").write_text("{}")
    assert find_sidecar(old) == tmp_path / "a.tsv.gz.yaml"
    assert find_sidecar(new) == tmp_path / "b.tsv.gz-meta.yaml"
    assert [path.name for path in sidecars_in(tmp_path)] == ["a.tsv.gz.yaml", "b.tsv.gz-meta.yaml"]
    add_to_sidecars(tmp_path, {"code_identity": {"federation_version": "x"}})
    for path in sidecars_in(tmp_path):
        assert yaml.safe_load(path.read_text())["code_identity"] == {"federation_version": "x"}
