"""Federated analysis orchestrator for cross-border genomics."""

__version__ = "0.1.0"

try:  # the C++ text kernels, compiled from kernels/ when the package is installed
    from federation import _tsv as _tsv
except ImportError as error:
    raise ImportError(
        "federation._tsv (the meta-analysis's C++ text kernels) is not built in this checkout; "
        "run `make bootstrap` (or `uv sync`), which compiles it with g++"
    ) from error
