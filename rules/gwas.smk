# One association analysis per study entry: linear or logistic regression with covariates
# and optional principal components computed on the node.


rule gwas:
    input:
        mt=WORK / "qc.mt",
    output:
        table=PRIVATE / "gwas" / "{analysis}.tsv.bgz",
        design=PRIVATE / "gwas" / "{analysis}.design.json",
    log:
        LOGS / "gwas.{analysis}.log",
    threads: 2
    resources:
        mem_mb=6000,
    shell:
        "{FEDERATION} gwas {CONFIG_ARGS} --analysis {wildcards.analysis} --qc-mt {input.mt:q}"
        " --out {output.table:q} --design {output.design:q} > {log:q} 2>&1"
