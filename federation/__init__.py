"""Federated analysis orchestrator for cross-border genomics."""

__version__ = "0.1.0"
