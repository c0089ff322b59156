"""The server's view of the federation, kept current in the background.

`Dashboard` holds the coordinator and one lock that serialises everything that changes its
ledger (the background tick, a WES submission, a cancellation). Every `refresh_seconds` the
tick reads each open study's latest signed node statuses, collects what was released (and so
meta-analyses once the quorum is met, exactly as `federation study collect` does), reads each
node's signed policy document, and records a summary of each new meta-analysis. When anything
a page shows has changed, `version` goes up and waiting event streams wake.

What changed since the last node arrived: each time a study's meta-analysis covers a new set
of nodes, the summary (N, λGC, top variants per analysis) is appended to the study's history
in `STATE_DIR/dashboard/<study_id>.meta-history.json`; the study page compares the last two.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.coordinator.coordinator import Coordinator, meta_output_name
from federation.coordinator.ledger import StudyStatus
from federation.coordinator.preflight import read_policy
from federation.coordinator.status import StudyView, study_view, study_views
from federation.errors import FederationError
from federation.files import atomic_write_json
from federation.jsonio import parse_json_strictly
from federation.meta.summary import summarise_meta_file
from federation.protocol.messages import NodePolicyDocument
from federation.settings import DashboardSettings

LOG = logging.getLogger(__name__)
DASHBOARD_DIR = "dashboard"  # under the coordinator's state_dir
HISTORY_SUFFIX = ".meta-history.json"


@dataclass
class NodeCard:
    """What the directory shows of one node: its signed policy, or why there is none."""

    node_id: str
    policy: NodePolicyDocument | None = None
    problem: str | None = None  # unreachable mailbox, or a policy that does not verify

    def to_json(self, last_report: str | None) -> dict[str, Any]:
        policy = self.policy
        contact = [time for time in (last_report, _issued(policy)) if time]
        return {
            "node_id": self.node_id,
            "problem": self.problem,
            "last_contact": max(contact) if contact else None,
            "policy": None
            if policy is None
            else {
                **policy.to_payload(),
                "approved_workflows": [a.to_dict() for a in policy.approved_workflows],
            },
        }


def _issued(policy: NodePolicyDocument | None) -> str | None:
    return None if policy is None else policy.issued_at.isoformat(timespec="seconds")


@dataclass
class Dashboard:
    coordinator: Coordinator
    settings: DashboardSettings
    collect: bool = True  # False: only read (tests, or a second server beside `study collect`)
    lock: threading.RLock = field(default_factory=threading.RLock)
    version: int = 0
    nodes: dict[str, NodeCard] = field(default_factory=dict)
    _fingerprint: str = ""
    _changed: threading.Condition = field(default_factory=threading.Condition)

    # ------------------------------------------------------------------ reading

    @property
    def history_dir(self) -> Path:
        return self.coordinator.settings.state_dir / DASHBOARD_DIR

    def views(self) -> list[StudyView]:
        return study_views(self.coordinator.ledger)

    def view(self, study_id: str) -> StudyView:
        return study_view(self.coordinator.ledger, study_id)

    def results_dir(self, study_id: str) -> Path:
        return self.coordinator.settings.results_dir / study_id

    def meta_history(self, study_id: str) -> list[dict[str, Any]]:
        path = self.history_dir / f"{study_id}{HISTORY_SUFFIX}"
        if not path.exists():
            return []
        history = parse_json_strictly(path.read_bytes())
        return history if isinstance(history, list) else []

    # ------------------------------------------------------------------ the tick

    def tick(self) -> bool:
        """One round: statuses, results, policies, meta summaries. Returns whether a page
        would now show something else."""
        with self.lock:
            for view in self.views():
                if view.status == StudyStatus.CANCELLED:
                    continue
                if view.open or view.status == StudyStatus.SUBMITTED:
                    self._advance(view.study_id)
                self._record_meta(view.study_id)
            self._read_policies()
            return self._notice_change()

    def _advance(self, study_id: str) -> None:
        try:
            if self.collect:
                self.coordinator.collect(study_id)
            else:
                self.coordinator.refresh(study_id)
        except FederationError as error:  # the next tick tries again; the page shows the ledger
            LOG.warning("study %s: %s", study_id, error)

    def _read_policies(self) -> None:
        for node_id in self.coordinator.settings.nodes:
            card = NodeCard(node_id)
            try:
                with closing(self.coordinator.mailbox(node_id)) as mailbox:
                    card.policy = read_policy(mailbox, node_id, self.coordinator.node_keys)
                if card.policy is None:
                    card.problem = "no policy published yet"
            except FederationError as error:
                card.problem = str(error)
            self.nodes[node_id] = card

    def _record_meta(self, study_id: str) -> None:
        """Append a summary when the meta-analysis covers a new set of nodes."""
        study = self.coordinator.ledger.study(study_id)
        if not study.meta_nodes:
            return
        history = self.meta_history(study_id)
        nodes = sorted(study.meta_nodes)
        if history and history[-1].get("nodes") == nodes:
            return
        meta_dir = self.results_dir(study_id) / "meta"
        analyses: dict[str, dict[str, Any]] = {}
        for analysis_id in study.spec.analysis_ids:
            path = meta_dir / meta_output_name(study.spec, analysis_id)
            if path.exists() and path.name not in analyses:
                try:
                    analyses[path.name] = summarise_meta_file(path).to_json()
                except (FederationError, ValueError, KeyError) as error:
                    LOG.warning("meta summary of %s: %s", path, error)
        events = self.coordinator.ledger.events(study_id)
        entry = {
            "nodes": nodes,
            "at": events[-1]["time"] if events else None,
            "analyses": {summary["analysis"]: summary for summary in analyses.values()},
        }
        self.history_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.history_dir / f"{study_id}{HISTORY_SUFFIX}", [*history, entry])

    def _notice_change(self) -> bool:
        state = {
            "studies": [view.to_json() for view in self.views()],
            "nodes": {node: card.to_json(None) for node, card in sorted(self.nodes.items())},
            "meta": {view.study_id: len(self.meta_history(view.study_id)) for view in self.views()},
        }
        fingerprint = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        self.changed()
        return True

    def changed(self) -> None:
        """Something a page shows changed: wake every event stream."""
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Block until `version` passes `seen` (or `timeout`); returns the version."""
        with self._changed:
            self._changed.wait_for(lambda: self.version > seen, timeout=timeout)
            return self.version

    def run(self, stop: threading.Event) -> None:
        """Tick until `stop` is set (the server's background thread)."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # a tick must not end the server; the log says what failed
                LOG.exception("dashboard tick failed")
            stop.wait(self.settings.refresh_seconds)
