# Allele counts and frequencies of the QC'd cohort (node-private until released).


rule allele_frequencies:
    input:
        mt=WORK / "qc.mt",
        node_config=NODE_CONFIG,
    output:
        table=PRIVATE / "allele_frequencies.tsv.bgz",
    log:
        LOGS / "allele_frequencies.log",
    conda:
        "../envs/federation.yaml"
    params:
        step=FEDERATION_STEP,
    threads: HAIL_THREADS
    resources:
        mem_mb=4000,
    shell:
        "{params.step} allele-freq --node-config {input.node_config:q} --qc-mt {input.mt:q}"
        " --out {output.table:q} > {log:q} 2>&1"
