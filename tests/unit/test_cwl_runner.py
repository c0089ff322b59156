"""The CWL runner's pure parts: the job object, failure messages, provenance digests."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.settings import node_from_dict, with_input_paths


@pytest.fixture()
def node(tmp_path: Path):
    document = {
        "node_id": "ee",
        "genotypes": {"format": "vcf", "path": "data/g.vcf.bgz"},
        "phenotypes": "data/p.tsv",
    }
    return node_from_dict(document, tmp_path)


def test_input_paths_replace_the_configs_and_keep_the_rest(node, tmp_path):
    staged = tmp_path / "stg1" / "g.vcf.bgz"
    replaced = with_input_paths(node, genotypes=staged, phenotypes=Path("relative/p.tsv"))
    assert replaced.genotype_path == staged
    assert replaced.phenotypes == Path.cwd() / "relative" / "p.tsv"
    assert replaced.work_dir == node.work_dir and replaced.node_id == "ee"
    assert with_input_paths(node) is node


def test_input_paths_keep_a_link_name_so_plink_siblings_stay_beside_it(node, tmp_path):
    store, staged = tmp_path / "store", tmp_path / "stg"
    store.mkdir()
    staged.mkdir()
    (store / "3f9a").write_bytes(b"\x6c\x1b\x01")
    (staged / "g.bed").symlink_to(store / "3f9a")
    assert with_input_paths(node, genotypes=staged / "g.bed").genotype_path == staged / "g.bed"
