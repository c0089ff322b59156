"""Several nodes' runs at once on one machine: the demo's, `reproduce --nodes synthetic`'s and
the integration tier's federations.

Where it sits: the sandbox, where one process plays every node. A real node runs its own agent
on its own host; here each node's run (an agent pass, a pipeline run) mostly waits on its own
processes (Snakemake, the run's Hail driver JVM, the step processes), so one thread per node
lets the runs' single-threaded start-ups and their Hail work overlap on the machine's cores.
Each run already has its own processes, work directory, ledger and lock; the only thing the
runs share here is the caller's progress output, which `serialised` guards.

Guarantees (`run_side_by_side`):
- every node's job runs to its end, even when another's fails at once: no run is left half done;
- the results come back keyed by node, in the order the nodes were given; with `progress`,
  each node's end is said when it happens (``[fi] 14:02:11 run ended after 95.2 s``);
- once all have ended, a failure of any raises one `NodeRunsFailed` that names every failed
  node and its error (exit 1), never a silent partial result;
- if the caller is interrupted (Ctrl-C) it stops waiting at once: the worker threads are
  daemons, so the process can end, and each run's processes end with it (the pipeline's guard
  asks the kernel to stop its process group when its parent goes, `pipeline.guard`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from federation.errors import FederationError
from federation.pipeline.progress import clock_time

T = TypeVar("T")
WAIT_SECONDS = 0.5  # how often the caller's thread wakes while waiting: Ctrl-C lands within it


class NodeRunsFailed(FederationError):
    """One or more nodes' runs raised; `failures` maps each such node to its error."""

    def __init__(self, failures: Mapping[str, BaseException]) -> None:
        self.failures = dict(failures)
        super().__init__(
            "; ".join(f"node '{node}': {describe(error)}" for node, error in self.failures.items())
        )


def describe(error: BaseException) -> str:
    """One line for an error: a FederationError's own message, else its type and message."""
    return str(error) if isinstance(error, FederationError) else repr(error)


@dataclass(frozen=True)
class NodeRun(Generic[T]):
    """What one node's job returned and how long it took (wall seconds)."""

    result: T
    seconds: float


def serialised(progress: Callable[[str], None]) -> Callable[[str], None]:
    """`progress` made safe to call from several runs at once: one line at a time."""
    lock = threading.Lock()

    def locked(line: str) -> None:
        with lock:
            progress(line)

    return locked


def run_side_by_side(
    jobs: Mapping[str, Callable[[], T]], progress: Callable[[str], None] | None = None
) -> dict[str, NodeRun[T]]:
    """Run every node's job in its own thread, wait for all, return their results by node.

    Raises NodeRunsFailed naming each node whose job raised, after every job has ended.
    `progress` (called from the runs' threads: make it `serialised`) hears each run's end.
    """
    outcomes: dict[str, NodeRun[T]] = {}
    failures: dict[str, BaseException] = {}

    def run(node: str, job: Callable[[], T]) -> None:
        started = time.monotonic()
        try:
            result = job()
        except BaseException as error:  # reported by the caller's thread, below
            failures[node] = error
            said = f"run failed after {time.monotonic() - started:.1f} s: {describe(error)}"
        else:
            outcomes[node] = NodeRun(result, time.monotonic() - started)
            said = f"run ended after {outcomes[node].seconds:.1f} s"
        if progress is not None:
            progress(f"[{node}] {clock_time(time.time())} {said}")

    threads = [
        threading.Thread(target=run, args=(node, job), name=f"node-{node}", daemon=True)
        for node, job in jobs.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # a short join at a time: the caller stays interruptible
            thread.join(WAIT_SECONDS)
    if failures:
        failed = {node: failures[node] for node in jobs if node in failures}
        raise NodeRunsFailed(failed) from next(iter(failed.values()))
    return {node: outcomes[node] for node in jobs}
