"""The shared Hail driver's protocol: requests, answers, errors, start and stop (no JVM).

The driver's `execute` is replaced by a recorder here; the real steps run in the integration
tier (every Snakemake run of a node study goes through the driver).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from federation.analyses import driver
from federation.errors import SpecError
from federation.pipeline import driver_client
from federation.pipeline.driver_client import (
    DRIVER_ENV,
    DriverError,
    StepRequest,
    ensure_driver,
    listening,
    shutdown_driver,
)


def _request(**changes: object) -> StepRequest:
    fields: dict = {
        "step": "gwas",
        "node_config": "/n/node.yaml",
        "study_config": "/n/study.yaml",
        "analysis": "quant_gwas",
        "paths": {"qc_mt": "/w/qc.mt", "out": "/w/g.tsv.bgz", "design": "/w/d.json"},
    }
    return StepRequest(**{**fields, **changes})


@pytest.fixture
def short_dir():
    """A directory with a short path: a Unix socket path must fit in 108 bytes."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="drv-") as name:
        yield Path(name)


@pytest.fixture
def served(short_dir: Path, monkeypatch):
    """A driver serving in a thread whose steps are recorded, not run."""
    received: list[StepRequest] = []
    failures: dict[str, Exception] = {}

    def fake_execute(request: StepRequest) -> None:
        if request.analysis in failures:
            raise failures[request.analysis]
        received.append(request)

    monkeypatch.setattr(driver, "execute", fake_execute)
    socket_path = short_dir / "hail.sock"
    thread = threading.Thread(target=driver.serve, args=(socket_path,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not listening(socket_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    monkeypatch.setenv(DRIVER_ENV, str(socket_path))
    yield socket_path, received, failures
    shutdown_driver(socket_path)
    thread.join(timeout=5)


def test_a_request_survives_its_json_round_trip():
    request = _request()
    assert StepRequest.from_json(request.to_json()) == request


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (json.dumps({"step": "rm-rf", "node_config": "/n"}), "unknown step 'rm-rf'"),
        (json.dumps({"step": "qc", "node_config": "/n", "shell": "x"}), "unknown field 'shell'"),
        (json.dumps(["qc"]), "not a JSON object"),
    ],
)
def test_a_malformed_request_is_refused_in_one_line(text, expected):
    with pytest.raises(SpecError, match=expected) as error:
        StepRequest.from_json(text)
    assert "\n" not in str(error.value)


def test_a_missing_path_names_the_step_and_the_path():
    with pytest.raises(SpecError, match=r"'paths.design': missing; the gwas step"):
        _request(paths={}).required_path("design")


def test_steps_sent_to_the_driver_run_there_in_order(served):
    socket_path, received, _ = served
    first, second = _request(analysis="a1"), _request(analysis="a2")
    driver.run_step(first)
    driver.run_step(second)
    assert received == [first, second]


def test_a_steps_bad_input_reaches_the_caller_as_bad_input_with_its_message(served):
    _, received, failures = served
    failures["broken"] = SpecError("study config 'analyses.broken': no such trait 'bmi'")
    with pytest.raises(SpecError, match="no such trait 'bmi'"):
        driver.run_step(_request(analysis="broken"))
    driver.run_step(_request(analysis="fine"))  # the driver goes on serving
    assert [request.analysis for request in received] == ["fine"]


def test_an_unexpected_failure_reaches_the_caller_as_one_line_naming_the_log(served):
    _, _, failures = served
    failures["boom"] = RuntimeError("HailException: out of memory\n\tat is.hail.Foo")
    with pytest.raises(DriverError) as error:
        driver.run_step(_request(analysis="boom"))
    assert str(error.value).startswith("HailException: out of memory (see ")
    assert "\n" not in str(error.value)


def test_without_a_driver_a_step_runs_in_its_own_process(monkeypatch):
    ran: list[StepRequest] = []
    monkeypatch.delenv(DRIVER_ENV, raising=False)
    monkeypatch.setattr(driver, "execute", ran.append)
    driver.run_step(_request())
    assert ran == [_request()]


def test_the_first_step_starts_the_driver_the_next_reuses_it_and_shutdown_ends_it(short_dir):
    socket_path = short_dir / "hail.sock"
    pid = ensure_driver(socket_path)
    assert pid is not None and listening(socket_path)
    assert oct(socket_path.stat().st_mode & 0o777) == oct(0o600)
    assert ensure_driver(socket_path) is None  # already listening: nothing new started
    assert shutdown_driver(socket_path) is True
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0 and not socket_path.exists()
    assert shutdown_driver(socket_path) is False  # nothing left to stop


def test_a_step_waits_for_the_driver_the_runner_started_instead_of_starting_another(short_dir):
    socket_path = short_dir / "hail.sock"
    started = driver_client._spawn(socket_path, [])  # as start_driver does, without warming
    assert ensure_driver(socket_path) is None  # waited for it: nothing new started
    assert listening(socket_path)
    assert shutdown_driver(socket_path) is True
    assert started.wait(timeout=30) == 0


def test_a_step_reports_a_driver_that_died_while_starting_in_one_line(short_dir):
    socket_path = short_dir / "hail.sock"
    dying = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    socket_path.with_suffix(".pid").write_text(f"{dying.pid}\n")
    with pytest.raises(DriverError, match="exited while starting") as error:
        ensure_driver(socket_path)
    assert "\n" not in str(error.value) and not socket_path.exists()
    dying.wait()


def test_a_driver_the_runner_started_is_ended_with_the_run_even_while_still_starting(short_dir):
    from federation.pipeline.snakemake import _driver_stopped

    starting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    began = time.monotonic()
    with _driver_stopped(short_dir, starting):
        pass  # the run failed before the driver listened
    assert starting.poll() is not None and time.monotonic() - began < 5
    assert not short_dir.exists()
