#!/usr/bin/env cwl-runner
# The `allele_frequencies` rule of rules/allele_freq.smk as a CWL tool.
cwlVersion: v1.2
class: CommandLineTool
label: Allele counts and frequencies of the QC'd cohort
doc: |
  Allele counts, allele numbers, frequencies and homozygote counts per variant, computed on
  the QC'd MatrixTable. The table is node-private until the disclosure gate (release-af).

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
      hail:
        version: ["0.2.139"]
        specs: ["https://pypi.org/project/hail/"]
      openjdk:
        version: ["17"]
  ResourceRequirement:
    coresMin: 2
    ramMin: 4000
  # Hail starts a Spark driver; with `hail.master: spark://...` it talks to the node's cluster.
  NetworkAccess:
    networkAccess: true

baseCommand: [federation, step, allele-freq]

inputs:
  node_config:
    type: File
    format: edam:format_3750  # YAML
    doc: The node's own config (node.schema.json).
    inputBinding:
      prefix: --node-config
  qc_matrix_table:
    type: Directory
    doc: QC'd MatrixTable from the qc step.
    inputBinding:
      prefix: --qc-mt

arguments:
  - prefix: --out
    valueFrom: $(runtime.outdir)/allele_frequencies.tsv.bgz

stderr: allele_frequencies.log

outputs:
  allele_counts:
    type: File
    format: edam:format_3475  # TSV (block gzip)
    doc: Private allele-count table.
    outputBinding:
      glob: allele_frequencies.tsv.bgz
