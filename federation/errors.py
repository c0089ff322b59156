"""The FederationError tree and the exit codes of the command line.

Every error the project raises on purpose is one of these. `federation.cli.main` is the only
place that turns them into exit codes (`ExitCode`): `SpecError` (bad input) exits 2, a policy
refusal 3, another agent holding the node's lock 75, everything else 1. Messages are one line
and name what failed, the value, the limit and the fix, e.g.
``node 'fi': 23 cases < min_cases=50; result withheld (node policy)``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a `federation` command tells cron, systemd and scripts (README: exit codes).

    When several apply to one run, the first in this order wins: FAILED, REFUSED, PENDING.
    """

    OK = 0  # everything asked for was done (or there was nothing to do)
    FAILED = 1  # an error, or work failed (a task's pipeline, a study past reaching its quorum)
    BAD_INPUT = 2  # a config, study or argument is wrong; the one-line message names the fix
    REFUSED = 3  # work was refused, vetoed, withheld or cancelled (policy, not a fault)
    PENDING = 4  # nothing wrong, not finished: tasks wait for a person or for other nodes
    BUSY = 75  # another agent holds the node's lock; try again later (sysexits EX_TEMPFAIL)
    INTERRUPTED = 130  # stopped by a signal (SIGTERM gives 143); the next run resumes the task


class FederationError(Exception):
    """Base of all deliberate failures. `exit_code` is what the CLI returns."""

    exit_code: int = ExitCode.FAILED


class SpecError(FederationError):
    """Bad input from a user: a config, a study spec, a file that does not fit its contract."""

    exit_code = ExitCode.BAD_INPUT


class BundleError(FederationError):
    """A bundle fails its manifest, digest or archive-safety checks (fail closed)."""


class TransportError(FederationError):
    """Moving bytes failed. Retryable unless `retryable` is False."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class PolicyViolation(FederationError):
    """A node's policy refuses a task (signature, replay, workflow digest, expiry...)."""

    exit_code = ExitCode.REFUSED


class AgentBusy(FederationError):
    """Another agent holds the node's lock: this one exits at once (cron may overlap runs)."""

    exit_code = ExitCode.BUSY


class PipelineCancelled(FederationError):
    """The pipeline was stopped on purpose (a signed cancellation); nothing was released."""

    exit_code = ExitCode.REFUSED


class PipelineError(FederationError):
    """The node pipeline (Snakemake, cwltool or a Hail step) failed."""


class DisclosureError(FederationError):
    """The disclosure gate refused a release; nothing leaves the node. `categories` are the
    researcher-facing refusal categories (`outcomes.RefusalCategory` values), if known."""

    def __init__(self, message: str, categories: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.categories = categories


class MetaAnalysisError(FederationError):
    """The coordinator's meta-analysis could not be computed."""


class ProvenanceError(FederationError):
    """A study's RO-Crate could not be written, or does not verify (exit 1)."""
