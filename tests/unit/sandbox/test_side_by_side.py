"""Running several nodes' jobs at once (`sandbox.side_by_side`): all run, at the same time, and
a failure names its node only once every job has ended."""

from __future__ import annotations

import re
import signal
import threading
import time

import pytest

from federation.errors import ExitCode, PipelineError
from federation.sandbox.side_by_side import NodeRunsFailed, run_side_by_side, serialised

NODES = ("fi", "ee", "nl")
MEET_SECONDS = 10.0  # generous: three threads reaching a barrier on a loaded machine


def test_every_node_runs_at_the_same_time_and_its_result_comes_back_under_its_name() -> None:
    together = threading.Barrier(len(NODES), timeout=MEET_SECONDS)  # breaks if run one by one

    def job(node: str) -> str:
        together.wait()
        return f"released {node}"

    runs = run_side_by_side({node: (lambda node=node: job(node)) for node in NODES})
    assert list(runs) == list(NODES)
    assert [run.result for run in runs.values()] == [f"released {node}" for node in NODES]
    assert all(run.seconds >= 0 for run in runs.values())


def test_a_failing_node_is_named_and_the_others_still_run_to_their_end() -> None:
    finished: list[str] = []

    def slow(node: str) -> str:
        time.sleep(0.2)  # still running when 'ee' has already failed
        finished.append(node)
        return node

    def failing() -> str:
        raise PipelineError("step qc failed: no samples left")

    jobs = {"fi": lambda: slow("fi"), "ee": failing, "nl": lambda: slow("nl")}
    with pytest.raises(NodeRunsFailed) as raised:
        run_side_by_side(jobs)
    assert str(raised.value) == "node 'ee': step qc failed: no samples left"
    assert list(raised.value.failures) == ["ee"]
    assert sorted(finished) == ["fi", "nl"]
    assert raised.value.exit_code == ExitCode.FAILED


def test_every_failed_node_is_named_in_the_order_given_and_a_crash_by_its_type() -> None:
    def crash() -> None:
        raise KeyError("genotypes")

    def refused() -> None:
        raise PipelineError("gate could not complete")

    with pytest.raises(NodeRunsFailed) as raised:
        run_side_by_side({"fi": crash, "ee": lambda: None, "nl": refused})
    assert str(raised.value) == (
        "node 'fi': KeyError('genotypes'); node 'nl': gate could not complete"
    )
    assert isinstance(raised.value.__cause__, KeyError)


def test_no_jobs_is_no_runs() -> None:
    assert run_side_by_side({}) == {}


def test_serialised_progress_lets_one_line_through_at_a_time() -> None:
    inside = []
    lines: list[str] = []
    overlaps = []

    def slow_print(line: str) -> None:
        inside.append(line)
        if len(inside) > 1:
            overlaps.append(line)
        time.sleep(0.001)
        lines.append(line)
        inside.remove(line)

    progress = serialised(slow_print)

    def talk(node: str) -> None:
        for index in range(20):
            progress(f"[{node}] line {index}")

    run_side_by_side({node: (lambda node=node: talk(node)) for node in NODES})
    assert overlaps == []
    assert len(lines) == 20 * len(NODES)
    for node in NODES:  # each node's own lines keep their order
        assert [line for line in lines if line.startswith(f"[{node}]")] == [
            f"[{node}] line {index}" for index in range(20)
        ]


def test_each_run_says_when_it_ended_or_failed_naming_its_node_and_time() -> None:
    lines: list[str] = []

    def failing() -> None:
        raise PipelineError("step qc failed")

    with pytest.raises(NodeRunsFailed):
        run_side_by_side({"fi": lambda: None, "ee": failing}, serialised(lines.append))
    assert sorted(line.split(" ", 1)[0] for line in lines) == ["[ee]", "[fi]"]
    said = {line.split(" ", 1)[0]: line.split(" ", 2)[2] for line in lines}
    assert re.fullmatch(r"run ended after \d+\.\d s", said["[fi]"])
    assert re.fullmatch(r"run failed after \d+\.\d s: step qc failed", said["[ee]"])
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", line.split(" ")[1]) for line in lines)


def test_ctrl_c_stops_the_wait_at_once_while_a_run_is_still_going() -> None:
    release = threading.Event()
    main = threading.main_thread().ident
    assert main == threading.get_ident()  # SIGINT reaches the main thread only
    # Python's own Ctrl-C handler, as in a terminal: a shell without job control starts its
    # background commands (a CI run under nohup, say) with SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt = threading.Timer(0.2, signal.pthread_kill, args=(main, signal.SIGINT))
    started = time.monotonic()
    interrupt.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_side_by_side({"fi": lambda: release.wait(MEET_SECONDS)})
    finally:
        release.set()  # the stuck run ends now (in the demo: with the process)
        interrupt.join()
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < MEET_SECONDS / 2
