# Import genotypes, attach phenotypes, sample QC (call rate, sex check) and variant QC.


rule qc:
    input:
        genotypes=get_genotype_inputs,
        phenotypes=str(NODE.phenotypes),
        node_config=NODE_CONFIG,
        study_config=STUDY_CONFIG,
    output:
        mt=directory(WORK / "qc.mt"),
        counts=WORK / "qc_counts.json",
        samples=PRIVATE / "qc.samples.txt",
    log:
        LOGS / "qc.log",
    conda:
        "../envs/federation.yaml"
    params:
        step=FEDERATION_STEP,
    threads: HAIL_THREADS
    resources:
        mem_mb=6000,
    shell:
        "{params.step} qc --node-config {input.node_config:q} --study-config {input.study_config:q}"
        " --out-mt {output.mt:q} --counts {output.counts:q} --samples {output.samples:q} > {log:q} 2>&1"
