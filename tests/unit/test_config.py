"""Study and node configs: schema validation, defaults and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from federation.errors import SpecError
from federation.settings import load_node, node_from_dict
from federation.spec import LogisticTest, Model, TraitType, load_study, study_from_dict

MINIMAL_STUDY = {
    "study_id": "s1",
    "analyses": [
        {"id": "af", "type": "allele_frequency"},
        {
            "id": "q",
            "type": "gwas",
            "trait": "height",
            "trait_type": "quantitative",
            "covariates": ["age"],
            "principal_components": 3,
        },
        {"id": "b", "type": "gwas", "trait": "t2d", "trait_type": "binary", "test": "firth"},
    ],
}


def test_study_defaults_and_models():
    study = study_from_dict(MINIMAL_STUDY)
    assert study.reference_genome == "GRCh38" and study.engine == "snakemake"
    assert study.qc.maf_min == 0.01 and study.qc.hwe_p_min == 1e-6
    quantitative, binary = study.gwas
    assert quantitative.model is Model.LINEAR and quantitative.trait_type is TraitType.QUANTITATIVE
    assert quantitative.covariate_columns == ("age", "PC1", "PC2", "PC3")
    assert binary.model is Model.LOGISTIC and binary.test is LogisticTest.FIRTH
    assert study.max_principal_components == 3
    assert [a.id for a in study.allele_frequencies] == ["af"]


def _with(change):
    document = yaml.safe_load(yaml.safe_dump(MINIMAL_STUDY))
    change(document)
    return document


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["analyses"][1].update(trait_type="continuous"),
            ["trait_type", "continuous", "quantitative"],
        ),
        (lambda d: d.pop("analyses"), ["analyses", "required"]),
        (lambda d: d.update(study_id="has space"), ["study_id", "has space"]),
        (lambda d: d["analyses"][1].update(covariate=["x"]), ["covariate", "unexpected"]),
        (
            lambda d: d["analyses"][1].update(principal_components=50),
            ["principal_components", "50"],
        ),
        (lambda d: d.update(reference_genome="hg19"), ["reference_genome", "hg19"]),
        (lambda d: d["analyses"][2].update(model="linear"), ["model", "linear", "logistic"]),
        (lambda d: d["analyses"].append({"id": "q", "type": "allele_frequency"}), ["'q'", "twice"]),
        (lambda d: d.update(disclosure={"min_mac_gwas": -1}), ["min_mac_gwas", "-1"]),
    ],
)
def test_bad_study_is_one_line_naming_field_and_value(change, expected):
    with pytest.raises(SpecError) as error:
        study_from_dict(_with(change))
    message = str(error.value)
    assert "\n" not in message
    for word in expected:
        assert word in message


def test_study_file_errors(tmp_path: Path):
    with pytest.raises(SpecError, match="not found"):
        load_study(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("study_id: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        load_study(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_study(scalar)


NODE = {
    "node_id": "fi",
    "genotypes": {"format": "vcf", "path": "data/g.vcf.bgz"},
    "phenotypes": "data/p.tsv",
}


def test_node_paths_resolve_relative_to_config(tmp_path: Path):
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(NODE))
    node = load_node(path)
    assert node.genotype_path == tmp_path / "data" / "g.vcf.bgz"
    assert node.work_dir == tmp_path / "work" and node.results_dir == tmp_path / "results"
    assert node.hail.master == "local[2]" and node.reference_genome == "GRCh38"


@pytest.mark.parametrize(
    ("name", "suggestion"), [("hg19", "GRCh37"), ("hg38", "GRCh38"), ("CHM13", "GRCh37, GRCh38")]
)
def test_unknown_reference_genome(tmp_path: Path, name, suggestion):
    with pytest.raises(SpecError) as error:
        node_from_dict({**NODE, "reference_genome": name}, tmp_path)
    assert f"unknown reference genome '{name}'" in str(error.value) and suggestion in str(
        error.value
    )


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({**NODE, "genotypes": {"format": "bgen", "path": "x"}}, "bgen"),
        ({k: v for k, v in NODE.items() if k != "phenotypes"}, "phenotypes"),
        ({**NODE, "hail": {"driver_memory": "lots"}}, "driver_memory"),
        ({**NODE, "disclosure": {"min_mac_af": "ten"}}, "min_mac_af"),
    ],
)
def test_bad_node_config(tmp_path: Path, document, expected):
    with pytest.raises(SpecError, match=expected):
        node_from_dict(document, tmp_path)
