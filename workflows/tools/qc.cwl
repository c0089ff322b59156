#!/usr/bin/env cwl-runner
# The `qc` rule of rules/qc.smk as a CWL tool: the same `federation step qc` entry point.
cwlVersion: v1.2
class: CommandLineTool
label: Import genotypes, attach phenotypes, sample and variant QC
doc: |
  Imports the node's genotypes (VCF or PLINK), keeps samples with phenotypes, and applies the
  study's sample QC (call rate, sex check) and variant QC (call rate, HWE, MAF). Writes the
  QC'd Hail MatrixTable and the QC counts. Both hold or describe individual-level data and
  stay on the node.

  The genotype and phenotype files are File inputs, so the engine stages them; their staged
  paths replace the paths written in the node config (`--genotypes`, `--phenotypes`).

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

baseCommand: [federation, step, qc]

inputs:
  node_config:
    type: File
    format: edam:format_3750  # YAML
    doc: The node's own config (node.schema.json); its genotype/phenotype paths are overridden.
    inputBinding:
      prefix: --node-config
  study_config:
    type: File
    format: edam:format_3750  # YAML
    doc: The study config (study.schema.json).
    inputBinding:
      prefix: --study-config
  genotypes:
    type: File
    # EDAM has no term for PLINK binary genotypes (format_3003 is UCSC BED), so PLINK's own
    # format specification is the identifier.
    format: [edam:format_3016, plink:bed]  # VCF (bgzip), PLINK 1 binary .bed
    doc: Block-gzipped VCF, or a PLINK .bed with its .bim and .fam beside it.
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
  # Absolute paths: the step puts Hail's scratch space beside its outputs.
  - prefix: --out-mt
    valueFrom: $(runtime.outdir)/qc.mt
  - prefix: --counts
    valueFrom: $(runtime.outdir)/qc_counts.json
  - prefix: --samples
    valueFrom: $(runtime.outdir)/qc.samples.txt

stderr: qc.log

outputs:
  qc_matrix_table:
    type: Directory
    doc: The QC'd genotypes with phenotypes (Hail MatrixTable; individual-level, node-private).
    outputBinding:
      glob: qc.mt
  qc_counts:
    type: File
    format: edam:format_3464  # JSON
    doc: Samples and variants removed by each QC filter (node-private until release-qc).
    outputBinding:
      glob: qc_counts.json
  cohort_samples:
    type: File
    format: edam:format_1964  # plain text, one sample ID per line
    doc: The QC'd cohort's sample IDs, for the privacy ledger of release-af (node-private).
    outputBinding:
      glob: qc.samples.txt
