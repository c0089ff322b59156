"""Runners for the node pipeline: Snakemake (and, from the CWL issue on, cwltool)."""
