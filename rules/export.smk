# The release: every file that leaves the node passes the disclosure gate here.
# A withheld release fails its rule and writes nothing; the node audit log says why.



rule release_gwas:
    input:
        table=PRIVATE / "gwas" / "{analysis}.tsv.bgz",
        design=PRIVATE / "gwas" / "{analysis}.design.json",
        counts=WORK / "qc_counts.json",
    output:
        sumstats=RELEASE / "{analysis}.tsv.gz",
        sidecar=RELEASE / "{analysis}.tsv.gz.yaml",
    log:
        LOGS / "release.{analysis}.log",
    wildcard_constraints:
        analysis="|".join(analysis.id for analysis in STUDY.gwas) or "(?!)",
    shell:
        "{FEDERATION} release-gwas {CONFIG_ARGS} --analysis {wildcards.analysis} --private {input.table:q}"
        " --design {input.design:q} --qc-counts {input.counts:q} --out {output.sumstats:q}"
        " --audit-log {AUDIT_LOG:q} > {log:q} 2>&1"


rule release_allele_frequencies:
    input:
        table=PRIVATE / "allele_frequencies.tsv.bgz",
        counts=WORK / "qc_counts.json",
    output:
        table=RELEASE / "{analysis}.tsv.gz",
        sidecar=RELEASE / "{analysis}.tsv.gz.yaml",
    log:
        LOGS / "release.{analysis}.log",
    wildcard_constraints:
        analysis="|".join(analysis.id for analysis in STUDY.allele_frequencies) or "(?!)",
    shell:
        "{FEDERATION} release-af {CONFIG_ARGS} --analysis {wildcards.analysis} --private {input.table:q}"
        " --qc-counts {input.counts:q} --out {output.table:q} --audit-log {AUDIT_LOG:q} > {log:q} 2>&1"


rule release_qc_metrics:
    input:
        counts=WORK / "qc_counts.json",
    output:
        metrics=RELEASE / "qc_metrics.json",
    log:
        LOGS / "release.qc_metrics.log",
    shell:
        "{FEDERATION} release-qc {CONFIG_ARGS} --qc-counts {input.counts:q} --out {output.metrics:q} > {log:q} 2>&1"
