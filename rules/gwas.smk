# One association analysis per study entry: linear or logistic regression with covariates
# and optional principal components computed on the node.


rule gwas:
    input:
        mt=WORK / "qc.mt",
        node_config=NODE_CONFIG,
        study_config=STUDY_CONFIG,
    output:
        table=PRIVATE / "gwas" / "{analysis}.tsv.bgz",
        design=PRIVATE / "gwas" / "{analysis}.design.json",
        samples=PRIVATE / "gwas" / "{analysis}.samples.txt",
        # no-call profiles of the QC samples the analysis leaves out, for the cell guard
        nocalls=PRIVATE / "gwas" / "{analysis}.samples.nocalls.json",
    log:
        LOGS / "gwas.{analysis}.log",
    conda:
        "../envs/federation.yaml"
    params:
        step=FEDERATION_STEP,
    threads: HAIL_THREADS
    resources:
        mem_mb=6000,
    shell:
        "{params.step} gwas --node-config {input.node_config:q} --study-config {input.study_config:q}"
        " --analysis {wildcards.analysis} --qc-mt {input.mt:q}"
        " --out {output.table:q} --design {output.design:q} --samples {output.samples:q} > {log:q} 2>&1"
