# The release: every file that leaves the node passes the disclosure gate here.
# Each release rule's output is its decision (OUTCOMES/<analysis>.json: released, withheld or
# failed; federation/outcomes.py). A withheld release writes no table, and its rule still
# succeeds, so one withheld analysis never stops the others; the node audit log says why.
# A check that cannot complete fails its rule (fail closed: the run releases nothing).


rule release_gwas:
    input:
        table=PRIVATE / "gwas" / "{analysis}.tsv.bgz",
        design=PRIVATE / "gwas" / "{analysis}.design.json",
        samples=PRIVATE / "gwas" / "{analysis}.samples.txt",
        nocalls=PRIVATE / "gwas" / "{analysis}.samples.nocalls.json",  # read beside samples
        counts=WORK / "qc_counts.json",
        node_config=NODE_CONFIG,
        study_config=STUDY_CONFIG,
    output:
        outcome=OUTCOMES / "{analysis}.json",
    log:
        LOGS / "release.{analysis}.log",
    conda:
        "../envs/federation.yaml"
    params:
        step=FEDERATION_STEP,
        audit_log=AUDIT_LOG,
        sumstats=get_release_path,  # written only when released (its .yaml sidecar beside it)
    wildcard_constraints:
        analysis=GWAS_IDS,
    shell:
        "{params.step} release-gwas --node-config {input.node_config:q} --study-config {input.study_config:q}"
        " --analysis {wildcards.analysis} --private {input.table:q} --design {input.design:q}"
        " --qc-counts {input.counts:q} --samples {input.samples:q} --out {params.sumstats:q}"
        " --audit-log {params.audit_log:q} > {log:q} 2>&1"


rule release_allele_frequencies:
    input:
        table=PRIVATE / "allele_frequencies.tsv.bgz",
        samples=PRIVATE / "qc.samples.txt",
        counts=WORK / "qc_counts.json",
        node_config=NODE_CONFIG,
        study_config=STUDY_CONFIG,
    output:
        outcome=OUTCOMES / "{analysis}.json",
    log:
        LOGS / "release.{analysis}.log",
    conda:
        "../envs/federation.yaml"
    params:
        step=FEDERATION_STEP,
        audit_log=AUDIT_LOG,
        table=get_release_path,  # written only when released (its .yaml sidecar beside it)
    wildcard_constraints:
        analysis=ALLELE_FREQUENCY_IDS,
    shell:
        "{params.step} release-af --node-config {input.node_config:q} --study-config {input.study_config:q}"
        " --analysis {wildcards.analysis} --private {input.table:q} --qc-counts {input.counts:q} --samples {input.samples:q}"
        " --out {params.table:q} --audit-log {params.audit_log:q} > {log:q} 2>&1"


rule release_qc_metrics:
    input:
        counts=WORK / "qc_counts.json",
        node_config=NODE_CONFIG,
        study_config=STUDY_CONFIG,
    output:
        metrics=RELEASE / "qc_metrics.json",
    log:
        LOGS / "release.qc_metrics.log",
    conda:
        "../envs/federation.yaml"
    params:
        step=FEDERATION_STEP,
    shell:
        "{params.step} release-qc --node-config {input.node_config:q} --study-config {input.study_config:q}"
        " --qc-counts {input.counts:q} --out {output.metrics:q} > {log:q} 2>&1"
