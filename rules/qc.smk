# Import genotypes, attach phenotypes, sample QC (call rate, sex check) and variant QC.


rule qc:
    input:
        genotypes=get_genotype_inputs,
        phenotypes=str(NODE.phenotypes),
    output:
        mt=directory(WORK / "qc.mt"),
        counts=WORK / "qc_counts.json",
    log:
        LOGS / "qc.log",
    threads: 2
    resources:
        mem_mb=6000,
    shell:
        "{FEDERATION} qc {CONFIG_ARGS} --out-mt {output.mt:q} --counts {output.counts:q} > {log:q} 2>&1"
