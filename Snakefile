# The node pipeline, run inside a national node's secure processing environment.
#
#   snakemake --profile profiles/local --config node_config=NODE.yaml study_config=STUDY.yaml
#
# Individual-level intermediates stay in the node's work_dir; only what the release rules of
# rules/export.smk let through the disclosure gate is released. `rule all` asks for the QC
# metrics and each analysis's release decision (a withheld analysis has no table).

include: "rules/common.smk"
include: "rules/qc.smk"
include: "rules/allele_freq.smk"
include: "rules/gwas.smk"
include: "rules/export.smk"


rule all:
    input:
        get_released_files(),
    default_target: True


# The run's shared Hail driver (federation/analyses/driver.py), if one was started, ends with
# the run; without one these do nothing.
onsuccess:
    shutdown_driver()


onerror:
    shutdown_driver()
