"""The FederationError tree.

Every error the project raises on purpose is one of these. `cli.py` is the only place
that turns them into exit codes: `SpecError` (bad input) exits 2, everything else 1.
Messages are one line and name what failed, the value, the limit and the fix, e.g.
``node 'fi': 23 cases < min_cases=50; result withheld (node policy)``.
"""

from __future__ import annotations


class FederationError(Exception):
    """Base of all deliberate failures. `exit_code` is what the CLI returns."""

    exit_code = 1


class SpecError(FederationError):
    """Bad input from a user: a config, a study spec, a file that does not fit its contract."""

    exit_code = 2


class BundleError(FederationError):
    """A bundle fails its manifest, digest or archive-safety checks (fail closed)."""


class TransportError(FederationError):
    """Moving bytes failed. Retryable unless `retryable` is False."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class PolicyViolation(FederationError):
    """A node's policy refuses a task (signature, replay, workflow digest, expiry...)."""


class PipelineError(FederationError):
    """The node pipeline (Snakemake, cwltool or a Hail step) failed."""


class DisclosureError(FederationError):
    """The disclosure gate refused a release; nothing leaves the node. `categories` are the
    researcher-facing refusal categories (`release.rules.RefusalCategory` values), if known."""

    def __init__(self, message: str, categories: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.categories = categories


class MetaAnalysisError(FederationError):
    """The coordinator's meta-analysis could not be computed."""
