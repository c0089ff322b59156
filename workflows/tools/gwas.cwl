#!/usr/bin/env cwl-runner
# The `gwas` rule of rules/gwas.smk as a CWL tool (the workflow scatters it over analyses).
cwlVersion: v1.2
class: CommandLineTool
label: One association analysis (linear or logistic regression per variant)
doc: |
  Runs the study's GWAS analysis `analysis` on the QC'd MatrixTable: covariates from the
  study, principal components computed on the node when asked for. Writes the private
  association table and the model summary (N, cases, parameters) the disclosure gate needs.

  The step checks the study against the node's inputs before starting Hail, so it takes the
  genotype and phenotype files too (staged like in the qc tool).

$namespaces:
  edam: http://edamontology.org/
  plink: https://www.cog-genomics.org/plink/1.9/formats#

hints:
  # Nodes here run with `cwltool --no-container` in the project's own venv; a node that runs
  # containers builds this image from envs/federation.yaml (no public registry holds it).
  DockerRequirement:
    dockerImageId: federation-node:0.1.0
  SoftwareRequirement:
    packages:
      federation:
        version: ["0.1.0"]
      hail:
        version: ["0.2.139"]
        specs: ["https://pypi.org/project/hail/"]
      openjdk:
        version: ["17"]
  ResourceRequirement:
    coresMin: 2
    ramMin: 6000
  # Hail starts a Spark driver; with `hail.master: spark://...` it talks to the node's cluster.
  NetworkAccess:
    networkAccess: true

baseCommand: [federation, step, gwas]

inputs:
  node_config:
    type: File
    format: edam:format_3750  # YAML
    doc: The node's own config (node.schema.json).
    inputBinding:
      prefix: --node-config
  study_config:
    type: File
    format: edam:format_3750  # YAML
    doc: The study config (study.schema.json).
    inputBinding:
      prefix: --study-config
  analysis:
    type: string
    doc: GWAS analysis id from the study config.
    inputBinding:
      prefix: --analysis
  qc_matrix_table:
    type: Directory
    doc: QC'd MatrixTable from the qc step.
    inputBinding:
      prefix: --qc-mt
  genotypes:
    type: File
    # EDAM has no term for PLINK binary genotypes (format_3003 is UCSC BED).
    format: [edam:format_3016, plink:bed]  # VCF (bgzip), PLINK 1 binary .bed
    doc: The genotypes the qc step imported (read here for the sample-ID check only).
    secondaryFiles:
      - pattern: .tbi
        required: false
      - pattern: ^.bim
        required: false
      - pattern: ^.fam
        required: false
      - pattern: ^.sample  # a BGEN's Oxford sample file
        required: false
    inputBinding:
      prefix: --genotypes
  phenotypes:
    type: File
    format: edam:format_3475  # TSV
    doc: Tab-separated phenotypes with a sample_id column.
    inputBinding:
      prefix: --phenotypes

arguments:
  - prefix: --out
    valueFrom: $(runtime.outdir)/$(inputs.analysis).tsv.bgz
  - prefix: --design
    valueFrom: $(runtime.outdir)/$(inputs.analysis).design.json
  - prefix: --samples
    valueFrom: $(runtime.outdir)/$(inputs.analysis).samples.txt

stderr: gwas.$(inputs.analysis).log

outputs:
  association_table:
    type: File
    format: edam:format_3475  # TSV (block gzip)
    doc: Private association results, with the counts the disclosure gate checks.
    outputBinding:
      glob: $(inputs.analysis).tsv.bgz
  design:
    type: File
    format: edam:format_3464  # JSON
    doc: Model summary (N, cases, controls, parameters).
    outputBinding:
      glob: $(inputs.analysis).design.json
  cohort_samples:
    type: File
    format: edam:format_1964  # plain text, one sample ID per line
    doc: |
      The analysed samples' IDs, for the privacy ledger of release-gwas (node-private), with
      the no-call profiles of the QC samples the analysis leaves out (for the cell guard).
    secondaryFiles:
      - pattern: ^.nocalls.json
        required: true
    outputBinding:
      glob: $(inputs.analysis).samples.txt
