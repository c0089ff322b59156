"""Study and node configs: schema validation, defaults and one-line errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from federation.errors import SpecError
from federation.settings import load_node, node_from_dict
from federation.spec import (
    LogisticTest,
    MissingGenotypes,
    Model,
    TraitType,
    load_study,
    study_from_dict,
)

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
    assert quantitative.missing_genotypes is MissingGenotypes.MEAN
    assert study.qc.relatedness and study.qc.kinship_max is None  # the node's threshold


def test_missing_genotypes_exclude_is_an_option_of_linear_and_logistic_wald_models():
    def both(document: dict) -> None:
        for entry in document["analyses"][1:]:
            entry.update(missing_genotypes="exclude")
        document["analyses"][2].update(test="wald")

    study = study_from_dict(_with(both))
    assert [a.model for a in study.gwas] == [Model.LINEAR, Model.LOGISTIC]
    assert all(a.missing_genotypes is MissingGenotypes.EXCLUDE for a in study.gwas)


def test_node_phenotype_coding_relatedness_and_reference_check_from_yaml(tmp_path: Path):
    (tmp_path / "node.yaml").write_text(
        "node_id: fi\ngenotypes: {format: vcf, path: g.vcf.bgz}\nphenotypes: p.tsv\n"
        "phenotype_coding:\n  quantitative_missing: [-9]\n  sex_column: isFemale\n"
        "  sex_coding: {'true': female, 'false': male}\n"
        "relatedness: {kinship_max: 0.177}\nreference_check: {max_mismatch_rate: 0.05}\n"
    )
    node = load_node(tmp_path / "node.yaml")
    assert node.phenotype_coding.quantitative_missing == (-9.0,)
    assert node.phenotype_coding.sex_column == "isFemale"
    assert node.phenotype_coding.sex_coding == {"true": "female", "false": "male"}
    assert node.kinship_max == 0.177 and node.reference_check.max_mismatch_rate == 0.05


def test_node_defaults_code_sex_zero_female_and_relate_at_second_degree(tmp_path: Path):
    node = node_from_dict(
        {"node_id": "fi", "genotypes": {"format": "vcf", "path": "g"}, "phenotypes": "p"}, tmp_path
    )
    assert node.phenotype_coding.sex_column == "sex"
    assert node.phenotype_coding.sex_coding == {"0": "female", "1": "male"}
    assert node.phenotype_coding.quantitative_missing == ()
    assert node.kinship_max == 0.0884


@pytest.mark.parametrize(
    ("coding", "expected"),
    [
        ({"sex_coding": {"1": "woman"}}, ["sex_coding", "woman"]),
        ({"quantitative_missing": ["minus nine"]}, ["quantitative_missing", "minus nine"]),
    ],
)
def test_bad_phenotype_coding_is_refused(tmp_path: Path, coding, expected):
    document = {
        "node_id": "fi",
        "genotypes": {"format": "vcf", "path": "g"},
        "phenotypes": "p",
        "phenotype_coding": coding,
    }
    with pytest.raises(SpecError) as error:
        node_from_dict(document, tmp_path)
    assert all(part in str(error.value) for part in expected), str(error.value)


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
        (
            lambda d: d["analyses"][2].update(missing_genotypes="exclude"),
            ["missing_genotypes", "exclude", "firth", "wald"],
        ),
        (
            lambda d: d["analyses"][1].update(missing_genotypes="drop"),
            ["missing_genotypes", "drop"],
        ),
        (lambda d: d.update(qc={"kinship_max": 0.6}), ["kinship_max", "0.6"]),
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
        ({**NODE, "genotypes": {"format": "gen", "path": "x"}}, "gen"),
        ({**NODE, "genotypes": {"format": "vcf", "path": "x", "dosage_field": "HDS"}}, "HDS"),
        ({k: v for k, v in NODE.items() if k != "phenotypes"}, "phenotypes"),
        ({**NODE, "hail": {"driver_memory": "lots"}}, "driver_memory"),
        ({**NODE, "disclosure": {"min_mac_af": "ten"}}, "min_mac_af"),
    ],
)
def test_bad_node_config(tmp_path: Path, document, expected):
    with pytest.raises(SpecError, match=expected):
        node_from_dict(document, tmp_path)


# ---------------------------------------------------------------- hardening against hostile configs

ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]"
        for i in range(8)
    ]
    + ["study_id: *i", "analyses: *i"]
)


def test_an_alias_bomb_gets_a_one_line_error_in_under_a_second(tmp_path: Path):
    path = tmp_path / "study.yaml"
    path.write_text(ALIAS_BOMB)
    assert len(path.read_bytes()) < 1000  # ~10^9 nodes once expanded
    started = time.perf_counter()
    with pytest.raises(SpecError) as error:
        load_study(path)
    assert time.perf_counter() - started < 1.0
    message = str(error.value)
    assert "\n" not in message and "aliases and anchors" in message and "line 1" in message


@pytest.mark.parametrize(
    "text",
    ["base: &b {x: 1}\nother: *b\n", "a: &anchored 1\n", "a: {<<: {x: 1}}\n"],
)
def test_anchors_and_aliases_are_refused_even_when_small(tmp_path: Path, text):
    path = tmp_path / "node.yaml"
    path.write_text(text)
    if "<<" in text:  # a merge key without an alias: the strict loader has no merge
        with pytest.raises(SpecError, match="not valid YAML at line 1"):
            load_node(path)
        return
    with pytest.raises(SpecError, match="aliases and anchors"):
        load_node(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("study_id: s1\nstudy_id: s2\nanalyses: []\n", "study_id"),
        ("study_id: s1\nqc: {maf_min: 0.01, maf_min: 0.2}\nanalyses: []\n", "maf_min"),
    ],
)
def test_duplicate_yaml_keys_are_refused(tmp_path: Path, text, key):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=f"duplicate key '{key}'"):
        load_study(path)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(study_id="s1\n"),
        lambda d: d["analyses"][0].update(id="af\n"),
        lambda d: d["analyses"][1].update(trait="height\n"),
        lambda d: d.update(nodes=["fi\n"]),
    ],
)
def test_identifiers_ending_in_a_newline_are_refused(change):
    with pytest.raises(SpecError, match="does not match") as error:
        study_from_dict(_with(change))
    assert "\n" not in str(error.value)


def test_a_node_id_ending_in_a_newline_is_refused():
    with pytest.raises(SpecError, match="node_id"):
        node_from_dict({**NODE, "node_id": "fi\n"}, Path("."))


def test_schema_messages_show_a_bounded_value():
    huge = {**MINIMAL_STUDY, "study_id": ["x" * 1000] * 1000}
    with pytest.raises(SpecError) as error:
        study_from_dict(huge)
    assert len(str(error.value)) < 300 and "..." in str(error.value)


def test_oversized_yaml_is_refused(tmp_path: Path):
    path = tmp_path / "study.yaml"
    path.write_text("study_id: s1\ndescription: '" + "x" * (2 << 20) + "'\n")
    with pytest.raises(SpecError, match="byte limit"):
        load_study(path)


# ---------------------------------------------------------------- the node's Spark cluster


def test_a_spark_cluster_and_its_executors_are_read_from_resources(tmp_path: Path):
    resources = {
        "spark_master": "spark://spark-head.example.org:7077",
        "spark_executor_memory": "8g",
        "spark_executor_cores": 4,
    }
    node = node_from_dict({**NODE, "resources": resources}, tmp_path)
    assert node.hail.master == "spark://spark-head.example.org:7077"
    assert (node.hail.executor_memory, node.hail.executor_cores) == ("8g", 4)


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"spark_master": "spark://head"}, "spark_master"),  # no port
        ({"spark_executor_memory": "8 GB"}, "spark_executor_memory"),
        ({"spark_executor_cores": 0}, "spark_executor_cores"),
    ],
)
def test_a_bad_spark_setting_is_refused_naming_its_field(tmp_path: Path, resources, field):
    with pytest.raises(SpecError, match=field):
        node_from_dict({**NODE, "resources": resources}, tmp_path)
