# Allele counts and frequencies of the QC'd cohort (node-private until released).


rule allele_frequencies:
    input:
        mt=WORK / "qc.mt",
    output:
        table=PRIVATE / "allele_frequencies.tsv.bgz",
    log:
        LOGS / "allele_frequencies.log",
    threads: 2
    resources:
        mem_mb=4000,
    shell:
        "{FEDERATION} allele-freq --node-config {NODE_CONFIG:q} --qc-mt {input.mt:q} --out {output.table:q} > {log:q} 2>&1"
