"""The dashboard and GA4GH WES on a real server, with a real browser and a real federation.

Three synthetic national nodes publish their signed policies; `federation serve` runs as its
own process on 127.0.0.1 (stopped by its PID); a study is submitted through GA4GH WES and a
second one is submitted and cancelled by an admin in the browser. While the nodes' agents run
the real Snakemake/Hail pipeline one after the other, Chromium (Debian's, driven by
Playwright) watches the study page update itself: every node is seen moving from delivered to
released, without the page being reloaded. The server collects, meta-analyses, and the WES
run reaches COMPLETE with its outputs listed and downloadable. A wrong token gets 401; a
read-only token is not offered the cancel button and is refused (403) if it tries anyway.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from federation.node.agent import NodeAgent
from federation.protocol.bundle import pipeline_workflow_digest
from federation.sandbox.demo import (
    dashboard_token_path,
    demo_envelope,
    demo_study,
    mailboxes,
    write_federation_configs,
)
from federation.sandbox.synth import synthesize
from tests.integration.browser import launch_chromium

pytestmark = pytest.mark.integration

SEED = 31
SAMPLES_PER_NODE = 400  # above every release threshold (N >= 100 for a GWAS), quick in Hail
VARIANTS = 2_000
REFRESH_SECONDS = 1  # the server reads the nodes this often: short, so the test sees each stage
SERVER_START_SECONDS = 60
RUN_SECONDS = 600  # three node pipelines side by side on two cores, then collection
POLL_SECONDS = 0.3
STUDY = "web-wes-study"
CANCELLED = "web-cancelled-study"
WES = "/ga4gh/wes/v1"
META_FILES = {"allele_frequencies.tsv.gz", "quant_trait_gwas.tsv.gz"}


def quiet(line: str) -> None:
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    admin: str
    reader: str
    root: Path
    node_configs: dict[str, Path]

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("dashboard")
    cohorts = synthesize(
        root / "cohorts",
        nodes=3,
        samples_per_node=SAMPLES_PER_NODE,
        variants=VARIANTS,
        seed=SEED,
        progress=quiet,
    )
    node_ids = [cohort.node_id for cohort in cohorts.nodes]
    approval = {"digest": pipeline_workflow_digest(), "envelope": demo_envelope()}
    with mailboxes("local", root, node_ids, quiet) as boxes:
        configs = write_federation_configs(root, cohorts.nodes, boxes, [approval])
    for node_id in node_ids:
        agent = NodeAgent(configs.nodes[node_id], progress=quiet)
        agent.publish_policy(force=True)
        agent.close()
    document = yaml.safe_load(configs.coordinator.read_text())
    document["dashboard"]["refresh_seconds"] = REFRESH_SECONDS
    configs.coordinator.write_text(yaml.safe_dump(document))
    port = free_port()
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "federation", "serve", "--coordinator", str(configs.coordinator)]
        + ["--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            assert process.poll() is None, (root / "server.log").read_text()
            try:
                if httpx.get(f"{url}/login", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.3)
        yield Server(
            url,
            process,
            dashboard_token_path(root, "admin").read_text().strip(),
            dashboard_token_path(root, "reader").read_text().strip(),
            root,
            configs.nodes,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    assert process.returncode is not None


def wes_study(node_ids: list[str], study_id: str) -> dict[str, Any]:
    """The demo's allele frequencies and quantitative GWAS, without principal components:
    the real pipeline with the fewest Hail steps (QC, frequencies, one GWAS)."""
    study = demo_study(node_ids)
    study["study_id"] = study_id
    study["analyses"] = [a for a in study["analyses"] if a["id"] != "binary_trait_gwas"]
    for analysis in study["analyses"]:
        analysis.pop("principal_components", None)
    return study


def submit_through_wes(server: Server, study_id: str) -> str:
    study = wes_study(list(server.node_configs), study_id)
    form = {
        "workflow_type": "federation-study",
        "workflow_type_version": "1",
        "workflow_url": pipeline_workflow_digest(),
        "workflow_params": json.dumps(study),
    }
    with server.client(server.admin) as client:
        response = client.post(f"{WES}/runs", data=form)
    assert response.status_code == 200, response.text
    return str(response.json()["run_id"])


def log_in(browser: Any, server: Server, token: str) -> Any:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.url}/studies")
    assert page.url.startswith(f"{server.url}/login")
    page.fill("#token", token)
    page.click("#login")
    page.wait_for_url(f"{server.url}/studies")
    return page


def node_statuses(page: Any) -> dict[str, str]:
    return page.eval_on_selector_all(
        "#matrix tr[data-node]",
        "rows => Object.fromEntries(rows.map(r => [r.dataset.node, r.dataset.status]))",
    )


def start_nodes(server: Server) -> dict[str, subprocess.Popen[bytes]]:
    """Each node's agent once, as its admin's cron would, the three side by side."""
    return {
        node_id: subprocess.Popen(
            [sys.executable, "-m", "federation", "node", "run-once", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=(server.root / f"agent-{node_id}.log").open("wb"),
            start_new_session=True,  # its own process group: stopped whole if the test fails
        )
        for node_id, config in server.node_configs.items()
    }


def stop(agents: dict[str, subprocess.Popen[bytes]]) -> None:
    for agent in agents.values():
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()


def test_a_wrong_token_gets_401_from_the_real_server(server: Server) -> None:
    with server.client("not-a-token-of-this-coordinator-000000") as client:
        assert client.get("/api/studies").status_code == 401
        assert client.get(f"{WES}/runs").status_code == 401
    with launch_chromium() as browser:
        page = browser.new_page()
        page.goto(f"{server.url}/login")
        page.fill("#token", "not-a-token-of-this-coordinator-000000")
        with page.expect_response(lambda response: response.url.endswith("/login")) as answer:
            page.click("#login")
        assert answer.value.status == 401
        assert page.inner_text("#login-error") == "token not recognised"


def test_a_wes_study_runs_to_complete_while_the_browser_watches_every_node(
    server: Server,
) -> None:
    run_id = submit_through_wes(server, STUDY)
    cancelled_id = submit_through_wes(server, CANCELLED)
    with launch_chromium() as browser:
        # A read-only holder sees the study but is not offered the cancel button, and a
        # cancellation sent anyway with its cookie is refused.
        reader = log_in(browser, server, server.reader)
        reader.goto(f"{server.url}/studies/{cancelled_id}")
        assert reader.locator("#cancel").count() == 0
        refused = reader.request.post(f"{server.url}/studies/{cancelled_id}/cancel")
        assert refused.status == 403
        with server.client(server.reader) as client:
            assert client.post(f"{WES}/runs/{cancelled_id}/cancel").status_code == 403

        # An admin cancels the second study with the button.
        admin = log_in(browser, server, server.admin)
        admin.goto(f"{server.url}/studies/{cancelled_id}")
        admin.fill("input[name=reason]", "submitted twice")
        admin.click("#cancel")
        admin.wait_for_selector("#study-status:text('cancelled')")
        with server.client(server.reader) as client:
            status = client.get(f"{WES}/runs/{cancelled_id}/status").json()
        assert status["state"] == "CANCELED"

        # The first study's page, left open while the nodes work: it must update by itself.
        admin.goto(f"{server.url}/studies/{run_id}")
        admin.evaluate("window.notReloaded = true")
        seen: dict[str, list[str]] = {}
        agents = start_nodes(server)
        deadline = time.monotonic() + RUN_SECONDS
        state = None
        try:
            while time.monotonic() < deadline:
                for node_id, status_ in node_statuses(admin).items():
                    history = seen.setdefault(node_id, [])
                    if not history or history[-1] != status_:
                        history.append(status_)
                with server.client(server.reader) as client:
                    state = client.get(f"{WES}/runs/{run_id}/status").json()["state"]
                if state == "COMPLETE" and all(a.poll() is not None for a in agents.values()):
                    break
                time.sleep(POLL_SECONDS)
        finally:
            stop(agents)
        codes = {node_id: agent.returncode for node_id, agent in agents.items()}
        assert state == "COMPLETE", (state, seen, codes)
        admin.wait_for_selector("#study-status:text('meta_analysed')", timeout=30_000)
        for node_id, status_ in node_statuses(admin).items():
            if seen[node_id][-1] != status_:
                seen[node_id].append(status_)
        assert admin.evaluate("window.notReloaded") is True  # updated in place, never reloaded

        assert set(seen) == set(server.node_configs)
        for node_id, history in seen.items():
            assert history[0] == "delivered", (node_id, history)
            assert history[-1] == "released", (node_id, history)
            assert set(history) & {"approved", "running"}, (node_id, history)
        assert "meta_analysed" in admin.inner_text("#study-status")

        # The report, when the coordinator wrote one, opens from the study page.
        report = server.root / "results" / run_id / "report.html"
        if report.exists():
            admin.click("#report-link")
            admin.wait_for_load_state()
            assert admin.url.endswith(f"/files/{run_id}/report.html")

        nodes = log_in(browser, server, server.reader)
        nodes.goto(f"{server.url}/nodes")
        assert int(nodes.inner_text("#total-genomes")) >= 3 * SAMPLES_PER_NODE

    # WES: the run log lists the outputs, and each one downloads as the file on disk.
    with server.client(server.reader) as client:
        log = client.get(f"{WES}/runs/{run_id}").json()
        assert log["state"] == "COMPLETE"
        assert {task["state"] for task in log["task_logs"]} == {"COMPLETE"}
        assert set(log["outputs"]["meta"]) >= META_FILES  # with their sidecars and indexes
        for name, url in log["outputs"]["meta"].items():
            downloaded = client.get(url)
            assert downloaded.status_code == 200
            on_disk = server.root / "results" / run_id / "meta" / name
            assert downloaded.content == on_disk.read_bytes()
        tasks = client.get(f"{WES}/runs/{cancelled_id}/tasks").json()["task_logs"]
        assert {task["state"] for task in tasks} == {"CANCELED"}
