from __future__ import annotations

from pathlib import Path

import pytest

from federation.pipeline.snakemake import _failure_message, _publish
from federation.settings import node_from_dict


@pytest.fixture()
def node(tmp_path: Path):
    return node_from_dict(
        {"node_id": "ee", "genotypes": {"format": "vcf", "path": "g"}, "phenotypes": "p"}, tmp_path
    )


def test_failure_names_rule_and_step_error(node, tmp_path):
    rule_log = tmp_path / "gwas.log"
    rule_log.write_text(
        "Traceback ...\nerror: analysis 'q': covariate 'batch' has no variance; remove it\n"
    )
    output = [
        "Building DAG of jobs...",
        "Error in rule gwas:",
        "    message: None",
        f"    log: {rule_log} (check log)",
    ]
    message = _failure_message(node, output, tmp_path / "snakemake.log")
    assert (
        message
        == "node 'ee': rule 'gwas' failed: analysis 'q': covariate 'batch' has no variance; remove it"
    )


def test_failure_without_step_message_points_at_log(node, tmp_path):
    message = _failure_message(
        node, ["MissingInputException in rule qc"], tmp_path / "snakemake.log"
    )
    assert message == f"node 'ee': snakemake failed: see {tmp_path / 'snakemake.log'}"


def test_publish_replaces_destination_whole(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "a.tsv.gz").write_text("new")
    destination = tmp_path / "results" / "nodes" / "ee"
    destination.mkdir(parents=True)
    (destination / "stale.tsv.gz").write_text("old")
    files = _publish(staging, destination)
    assert [path.name for path in files] == ["a.tsv.gz"]
    assert not any(
        path.name.startswith((".incoming", ".retired")) for path in destination.parent.iterdir()
    )
