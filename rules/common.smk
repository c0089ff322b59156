# Configuration, validation and path helpers shared by every rule.
import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

from federation.pipeline.driver_client import DRIVER_ENV, shutdown_driver
from federation.outcomes import outcomes_dir
from federation.settings import load_node
from federation.spec import load_study
from federation.yamlio import load_yaml_file

min_version("9.0")


def _load_yaml(key):
    if key not in config:
        raise ValueError(f"config '{key}' missing; run with --config {key}=PATH")
    return load_yaml_file(Path(config[key]))  # no aliases, anchors or duplicate keys


# The same JSON Schemas validate these configs here and in federation/spec.py and settings.py.
validate(_load_yaml("node_config"), "../config/schema/node.schema.json")
validate(_load_yaml("study_config"), "../config/schema/study.schema.json")

NODE_CONFIG = Path(config["node_config"]).resolve()
STUDY_CONFIG = Path(config["study_config"]).resolve()
NODE = load_node(NODE_CONFIG)
STUDY = load_study(STUDY_CONFIG)

# Node-private scratch for this study. RELEASE holds what passed the disclosure gate; the
# runner publishes it to the node's results folder only once the whole pipeline succeeded,
# so a failed run never leaves a partial result where results are collected. OUTCOMES holds
# each release step's decision (released, withheld or failed) per analysis.
WORK = NODE.work_dir / STUDY.study_id
PRIVATE = WORK / "private"
LOGS = WORK / "logs"
RELEASE = WORK / "release"
OUTCOMES = outcomes_dir(NODE.work_dir, STUDY.study_id)
AUDIT_LOG = NODE.federation.audit_log if NODE.federation else NODE.work_dir / "audit.jsonl"
# The same interpreter that runs Snakemake runs the steps: no PATH surprises inside an SPE.
FEDERATION_STEP = f"{shlex.quote(sys.executable)} -m federation step"
# Cores a Hail rule claims. With the run's shared Hail driver (federation/analyses/driver.py)
# the rule's own process only waits while the driver works: it claims one core, so the
# analyses queue at the driver together and the release steps run beside the Hail work.
# Without it (CWL, Slurm, a rule run by hand) the step's own JVM uses both.
HAIL_THREADS = 1 if os.environ.get(DRIVER_ENV) else 2
# Analysis ids as wildcard alternatives; "(?!)" matches nothing when a study has none.
GWAS_IDS = "|".join(analysis.id for analysis in STUDY.gwas) or "(?!)"
ALLELE_FREQUENCY_IDS = "|".join(analysis.id for analysis in STUDY.allele_frequencies) or "(?!)"

wildcard_constraints:
    analysis=r"[A-Za-z0-9][A-Za-z0-9_-]*",


def get_genotype_inputs(wildcards):
    """The genotype files the import reads, so Snakemake reruns QC when they change."""
    path = NODE.genotype_path
    if NODE.genotype_format == "plink":
        prefix = str(path).removesuffix(".bed")
        return [prefix + suffix for suffix in (".bed", ".bim", ".fam")]
    if NODE.genotype_format == "bgen":
        return [str(path), str(NODE.genotype_sample or path.with_suffix(".sample"))]
    return [str(path)]


def get_release_path(wildcards):
    """Where an analysis's released table goes if the gate lets it out; not declared as an
    output of its release step, since a withheld analysis has none."""
    return str(RELEASE / f"{wildcards.analysis}.tsv.gz")


def get_released_files():
    """The targets of the whole run, the QC metrics and every analysis's release decision."""
    files = [RELEASE / "qc_metrics.json"]
    files += [OUTCOMES / f"{analysis_id}.json" for analysis_id in STUDY.analysis_ids]
    return files
