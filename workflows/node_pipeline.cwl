#!/usr/bin/env cwl-runner
# The node pipeline of the Snakefile (rules/*.smk) in CWL, for nodes that run cwltool, Toil
# or a GA4GH WES service. Step ids are the Snakemake rule names, so a failure names the same
# step under either engine; every tool calls the same `federation step` entry point.
cwlVersion: v1.2
class: Workflow
label: Federated GWAS node pipeline (QC, allele frequencies, GWAS, disclosure gate)
doc: |
  Runs inside a national node's secure processing environment:
  import + QC -> allele frequencies -> GWAS (one job per analysis) -> release.
  Individual-level intermediates (the QC'd MatrixTable, private tables) stay inside the
  workflow; its outputs are only what passed the node's disclosure gate. An analysis the
  gate withholds is a null output, and the others are released all the same.

  `gwas_analyses` and `allele_frequency_analyses` list the study's analysis ids (the node
  runner reads them from the study config). Allele counts are computed even for a study that
  releases none: skipping them would need a JavaScript `when` expression, and a node's SPE
  may have no JavaScript engine; it is one pass over the QC'd genotypes.

$namespaces:
  edam: http://edamontology.org/
  plink: https://www.cog-genomics.org/plink/1.9/formats#

requirements:
  ScatterFeatureRequirement: {}

inputs:
  node_config:
    type: File
    format: edam:format_3750  # YAML
    doc: |
      The node's own config (node.schema.json); never leaves the node. Its genotype and
      phenotype paths are replaced by the staged `genotypes` and `phenotypes`. Its node-state
      paths (work_dir, privacy ledger, audit log) name the node's own files outside any job;
      relative ones resolve against the config's real location (cwltool stages it as a link).
  study_config:
    type: File
    format: edam:format_3750  # YAML
    doc: The study config (study.schema.json), from the signed bundle.
  genotypes:
    type: File
    format: [edam:format_3016, plink:bed]  # VCF (bgzip), PLINK 1 binary .bed
    doc: The node's genotypes; a PLINK .bed needs its .bim and .fam beside it.
    secondaryFiles:
      - pattern: .tbi
        required: false
      - pattern: ^.bim
        required: false
      - pattern: ^.fam
        required: false
      - pattern: ^.sample  # a BGEN's Oxford sample file
        required: false
  phenotypes:
    type: File
    format: edam:format_3475  # TSV
    doc: The node's phenotypes (tab-separated, sample_id column).
  gwas_analyses:
    type: string[]
    doc: Ids of the study's GWAS analyses.
  allele_frequency_analyses:
    type: string[]
    doc: Ids of the study's allele-frequency analyses.
  audit_log:
    type: string
    doc: Absolute path of the node audit log (JSON lines) the disclosure gate appends to.

steps:
  qc:
    run: tools/qc.cwl
    in:
      node_config: node_config
      study_config: study_config
      genotypes: genotypes
      phenotypes: phenotypes
    out: [qc_matrix_table, qc_counts, cohort_samples]

  allele_frequencies:
    run: tools/allele_freq.cwl
    in:
      node_config: node_config
      qc_matrix_table: qc/qc_matrix_table
    out: [allele_counts]

  gwas:
    run: tools/gwas.cwl
    scatter: analysis
    in:
      node_config: node_config
      study_config: study_config
      analysis: gwas_analyses
      qc_matrix_table: qc/qc_matrix_table
      genotypes: genotypes
      phenotypes: phenotypes
    out: [association_table, design, cohort_samples]

  release_gwas:
    run: tools/release_gwas.cwl
    scatter: [analysis, association_table, design, cohort_samples]
    scatterMethod: dotproduct
    in:
      node_config: node_config
      study_config: study_config
      analysis: gwas_analyses
      association_table: gwas/association_table
      design: gwas/design
      cohort_samples: gwas/cohort_samples
      qc_counts: qc/qc_counts
      audit_log: audit_log
    out: [summary_statistics, sidecar, index]

  release_allele_frequencies:
    run: tools/release_af.cwl
    scatter: analysis
    in:
      node_config: node_config
      study_config: study_config
      analysis: allele_frequency_analyses
      allele_counts: allele_frequencies/allele_counts
      cohort_samples: qc/cohort_samples
      qc_counts: qc/qc_counts
      audit_log: audit_log
    out: [allele_frequency_table, sidecar, index]

  release_qc_metrics:
    run: tools/release_qc.cwl
    in:
      node_config: node_config
      study_config: study_config
      qc_counts: qc/qc_counts
    out: [qc_metrics]

outputs:
  qc_metrics:
    type: File
    format: edam:format_3464  # JSON
    doc: Released QC metrics.
    outputSource: release_qc_metrics/qc_metrics
  # One entry per analysis, null where the disclosure gate withheld it (the node's
  # work_dir/<study_id>/outcomes/ says which); the node runner stages only the files.
  allele_frequency_tables:
    type: {type: array, items: ["null", File]}
    format: edam:format_3475  # TSV (gzip)
    doc: Released allele-frequency tables (TSV, BGZF), one per allele-frequency analysis.
    outputSource: release_allele_frequencies/allele_frequency_table
  allele_frequency_sidecars:
    type: {type: array, items: ["null", File]}
    format: edam:format_3750  # YAML
    doc: Their YAML metadata sidecars.
    outputSource: release_allele_frequencies/sidecar
  allele_frequency_indexes:
    type: {type: array, items: ["null", File]}
    format: edam:format_3616  # tabix index
    doc: Their tabix indexes (the tables are BGZF-compressed).
    outputSource: release_allele_frequencies/index
  gwas_summary_statistics:
    type: {type: array, items: ["null", File]}
    format: edam:format_3475  # TSV (gzip), GWAS-SSF
    doc: Released GWAS-SSF summary statistics (TSV, BGZF), one per GWAS analysis.
    outputSource: release_gwas/summary_statistics
  gwas_sidecars:
    type: {type: array, items: ["null", File]}
    format: edam:format_3750  # YAML
    doc: Their YAML metadata sidecars.
    outputSource: release_gwas/sidecar
  gwas_indexes:
    type: {type: array, items: ["null", File]}
    format: edam:format_3616  # tabix index
    doc: Their tabix indexes (the tables are BGZF-compressed).
    outputSource: release_gwas/index
