#!/usr/bin/env cwl-runner
# The `release_qc_metrics` rule of rules/export.smk as a CWL tool.
cwlVersion: v1.2
class: CommandLineTool
label: Release QC metrics
doc: |
  Releases the QC thresholds and counts, with sample counts rounded like N (exact counts
  would give N away by subtraction).

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

baseCommand: [federation, step, release-qc]

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
  qc_counts:
    type: File
    format: edam:format_3464  # JSON
    doc: QC counts from the qc step.
    inputBinding:
      prefix: --qc-counts

arguments:
  - prefix: --out
    valueFrom: $(runtime.outdir)/qc_metrics.json

stderr: release.qc_metrics.log

outputs:
  qc_metrics:
    type: File
    format: edam:format_3464  # JSON
    doc: Released QC metrics.
    outputBinding:
      glob: qc_metrics.json
