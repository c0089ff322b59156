"""The CWL pipeline files: valid CWL v1.2, wired to real `federation step` commands, typed.

`cwltool --validate` runs in-process (a second or two for all files); `make lint` runs it
from the command line too. The other checks read the YAML: every tool calls an existing
step subcommand with options it has, every File carries a format (EDAM where EDAM has one),
and the workflow's step ids are the Snakemake rule names, so a failure names the same step
under either engine.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from federation.cli.app import step_app
from federation.files import REPO_ROOT
from federation.spec import load_study

WORKFLOWS = REPO_ROOT / "workflows"
CWL_FILES = sorted(WORKFLOWS.rglob("*.cwl"))
TOOLS = sorted((WORKFLOWS / "tools").glob("*.cwl"))
WORKFLOW = WORKFLOWS / "node_pipeline.cwl"
EDAM = "http://edamontology.org/"
# The formats the pipeline's files have. EDAM has no term for PLINK binary genotypes
# (format_3003 is UCSC BED), hence PLINK's own specification for those.
KNOWN_FORMATS = {
    EDAM + "format_3016": "VCF",
    EDAM + "format_3475": "TSV",
    EDAM + "format_3464": "JSON",
    EDAM + "format_3750": "YAML",
    EDAM + "format_1964": "plain text",
    EDAM + "format_3616": "tabix index",
    "https://www.cog-genomics.org/plink/1.9/formats#bed": "PLINK 1 binary",
}
# Which format each kind of input must carry, by parameter id.
EXPECTED_FORMATS = {
    "node_config": {EDAM + "format_3750"},
    "study_config": {EDAM + "format_3750"},
    "genotypes": {EDAM + "format_3016", "https://www.cog-genomics.org/plink/1.9/formats#bed"},
    "phenotypes": {EDAM + "format_3475"},
    "qc_counts": {EDAM + "format_3464"},
    "design": {EDAM + "format_3464"},
    "qc_metrics": {EDAM + "format_3464"},
    "sidecar": {EDAM + "format_3750"},
    "cohort_samples": {EDAM + "format_1964"},
}


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def expand(document: dict[str, Any], value: Any) -> set[str]:
    """Format IRIs with the document's `$namespaces` prefixes expanded."""
    namespaces = document.get("$namespaces", {})
    values = value if isinstance(value, list) else [value]
    expanded = set()
    for item in values:
        prefix, _, rest = item.partition(":")
        expanded.add(namespaces[prefix] + rest if prefix in namespaces else item)
    return expanded


def is_file_type(declared: Any) -> bool:
    return declared in ("File", "File?", "File[]") or (
        isinstance(declared, dict) and declared.get("items") == "File"
    )


def step_commands() -> dict[str, Any]:
    group = typer.main.get_command(step_app)
    return dict(group.commands)  # type: ignore[attr-defined]


def rule_names() -> set[str]:
    names = set()
    for path in (REPO_ROOT / "rules").glob("*.smk"):
        names.update(re.findall(r"^rule (\w+):", path.read_text(), flags=re.MULTILINE))
    return names


def test_there_is_a_tool_per_step_command():
    called = {tuple(load(tool)["baseCommand"])[2] for tool in TOOLS}
    assert called == set(step_commands())


@pytest.mark.parametrize("path", CWL_FILES, ids=lambda path: path.name)
def test_cwltool_validates(path: Path):
    from cwltool.main import main as cwltool_main

    stderr = io.StringIO()
    assert cwltool_main(["--validate", str(path)], stdout=io.StringIO(), stderr=stderr) == 0, (
        stderr.getvalue()
    )
    assert load(path)["cwlVersion"] == "v1.2"


@pytest.mark.parametrize("path", TOOLS, ids=lambda path: path.name)
def test_tool_calls_a_step_command_with_its_own_options(path: Path):
    tool = load(path)
    base = tool["baseCommand"]
    assert base[:2] == ["federation", "step"] and len(base) == 3, base
    command = step_commands().get(base[2])
    assert command is not None, f"{path.name}: no `federation step {base[2]}`"
    options = {opt for param in command.params for opt in param.opts}
    bindings = [spec["inputBinding"]["prefix"] for spec in tool["inputs"].values()]
    bindings += [argument["prefix"] for argument in tool.get("arguments", [])]
    assert set(bindings) <= options, f"{path.name}: unknown options {set(bindings) - options}"
    required = {opt for param in command.params if param.required for opt in param.opts}
    assert required <= set(bindings), f"{path.name}: missing {required - set(bindings)}"


@pytest.mark.parametrize("path", [*TOOLS, WORKFLOW], ids=lambda path: path.name)
def test_every_file_parameter_has_a_known_format(path: Path):
    document = load(path)
    for section in ("inputs", "outputs"):
        for name, spec in document[section].items():
            if not is_file_type(spec["type"]):
                continue
            assert "format" in spec, f"{path.name}: {section} '{name}' has no format"
            formats = expand(document, spec["format"])
            assert formats <= set(KNOWN_FORMATS), f"{path.name}: '{name}' format {formats}"
            if name in EXPECTED_FORMATS:
                assert formats == EXPECTED_FORMATS[name], f"{path.name}: '{name}' {formats}"


@pytest.mark.parametrize("path", [*TOOLS, WORKFLOW], ids=lambda path: path.name)
def test_container_and_software_are_hints_only(path: Path):
    document = load(path)
    requirements = document.get("requirements", {})
    for name in ("DockerRequirement", "SoftwareRequirement"):
        assert name not in requirements, f"{path.name}: {name} must be a hint"
    if path != WORKFLOW:
        assert {"DockerRequirement", "SoftwareRequirement"} <= set(document["hints"])


def test_workflow_steps_are_the_snakemake_rules_and_use_every_tool():
    workflow = load(WORKFLOW)
    assert set(workflow["steps"]) == rule_names() - {"all"}
    used = {(WORKFLOW.parent / step["run"]).resolve() for step in workflow["steps"].values()}
    assert used == {tool.resolve() for tool in TOOLS}


def test_workflow_outputs_are_release_files_only():
    from federation.pipeline.cwl import RELEASED_OUTPUTS

    assert set(load(WORKFLOW)["outputs"]) == set(RELEASED_OUTPUTS)


@pytest.mark.parametrize(
    "path", sorted((WORKFLOWS / "jobs").glob("*.yml")), ids=lambda path: path.name
)
def test_example_jobs_fill_every_workflow_input(path: Path):
    workflow, job = load(WORKFLOW), load(path)
    assert set(job) == set(workflow["inputs"])
    for name, value in job.items():
        if isinstance(value, dict) and value.get("class") == "File":
            assert value["format"] in expand(workflow, workflow["inputs"][name]["format"])
    study = load_study((path.parent / job["study_config"]["location"]).resolve())
    assert job["gwas_analyses"] == [analysis.id for analysis in study.gwas]
    assert job["allele_frequency_analyses"] == [a.id for a in study.allele_frequencies]


CWLTEST_KEYS = {"id", "label", "doc", "tags", "tool", "job", "should_fail", "output"}


@pytest.mark.parametrize(
    "path", sorted((WORKFLOWS / "tests").glob("*.cwltest.yml")), ids=lambda path: path.name
)
def test_cwltest_descriptions_name_real_tools_jobs_and_outputs(path: Path):
    cases = yaml.safe_load(path.read_text())
    assert isinstance(cases, list) and cases
    for case in cases:
        assert set(case) <= CWLTEST_KEYS and {"id", "doc", "tool", "job", "output"} <= set(case)
        tool, job = load(path.parent / case["tool"]), load(path.parent / case["job"])
        assert set(case["output"]) <= set(tool["outputs"])
        required = {name for name, spec in tool["inputs"].items() if "?" not in str(spec["type"])}
        assert required <= set(job), f"{case['id']}: job lacks {required - set(job)}"
