#!/usr/bin/env cwl-runner
# The `release_gwas` rule of rules/export.smk as a CWL tool: the disclosure gate.
cwlVersion: v1.2
class: CommandLineTool
label: Release one association analysis through the disclosure gate (GWAS-SSF)
doc: |
  Applies the node's disclosure policy (tightened by the study) to the private association
  table and writes GWAS-SSF summary statistics with a YAML metadata sidecar. A withheld
  release writes no table (the step succeeds without these outputs, so one withheld analysis
  never stops the others), records its decision in work_dir/<study_id>/outcomes/<analysis>.json
  and says why in the node audit log.

$namespaces:
  edam: http://edamontology.org/

hints:
  # Nodes here run with `cwltool --no-container` in the project's own venv; a node that runs
  # containers builds this image from envs/federation.yaml (no public registry holds it).
  DockerRequirement:
    dockerImageId: federation-node:0.1.0
  SoftwareRequirement:
    packages:
      federation:
        version: ["0.1.0"]
  ResourceRequirement:
    coresMin: 1
    ramMin: 2000

baseCommand: [federation, step, release-gwas]

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
  association_table:
    type: File
    format: edam:format_3475  # TSV (block gzip)
    doc: Private association table from the gwas step.
    inputBinding:
      prefix: --private
  design:
    type: File
    format: edam:format_3464  # JSON
    doc: Model summary from the gwas step.
    inputBinding:
      prefix: --design
  qc_counts:
    type: File
    format: edam:format_3464  # JSON
    doc: QC counts from the qc step.
    inputBinding:
      prefix: --qc-counts
  cohort_samples:
    type: File
    format: edam:format_1964  # plain text, one sample ID per line
    doc: The analysed samples' IDs from the gwas step (checked against the node's privacy ledger).
    secondaryFiles:
      - pattern: ^.nocalls.json
        required: false
    inputBinding:
      prefix: --samples
  audit_log:
    type: string
    doc: |
      Absolute path of the node audit log (JSON lines), appended to by the disclosure gate.
      A path, not an output: the log is node-owned and records every release decision,
      including a failed check, and a failed step has no outputs.
    inputBinding:
      prefix: --audit-log

arguments:
  - prefix: --out
    valueFrom: $(runtime.outdir)/$(inputs.analysis).tsv.gz

stderr: release.$(inputs.analysis).log

outputs:
  summary_statistics:
    type: File?  # absent when the gate withheld the release
    format: edam:format_3475  # TSV (gzip), GWAS-SSF
    doc: Released GWAS-SSF summary statistics.
    outputBinding:
      glob: $(inputs.analysis).tsv.gz
  sidecar:
    type: File?  # absent when the gate withheld the release
    format: edam:format_3750  # YAML
    doc: GWAS-SSF metadata sidecar (N, QC counts, software versions, data checksums).
    outputBinding:
      glob: $(inputs.analysis).tsv.gz-meta.yaml
  index:
    type: File?  # absent when the gate withheld the release
    format: edam:format_3616  # tabix index
    doc: The table's tabix index (the table is BGZF-compressed).
    outputBinding:
      glob: $(inputs.analysis).tsv.gz.tbi
