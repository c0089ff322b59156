"""GA4GH Workflow Execution Service 1.1 at /ga4gh/wes/v1: submit and follow studies.

A WES run is a study: `POST /runs` takes `workflow_type` `federation-study` (version "1"),
`workflow_params` the study spec as JSON (what `federation study submit` reads as YAML) and
`workflow_url` the digest of the pipeline this coordinator ships, which the nodes approve
(`sha256:...`, as `federation study submit` prints it): a client cannot name a workflow the
nodes have not approved. The study then goes through the coordinator's own submit (pre-flight
against every node's signed policy; a study a node would refuse is refused with 400 and
nothing is sent). The run id is the study id; each node's task is a WES task; states map as
`web.states` says. `outputs` lists the study's files (meta-analyses, each node's release, the
report and the crate when present) as URLs on this server. Errors are WES `ErrorResponse`s:
400 bad request, 401 no or wrong token, 403 a read-only token submitting or cancelling, 404
an unknown run.
"""

import json
from datetime import datetime
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile

from federation import __version__
from federation.coordinator.coordinator import MailboxesUnreachable, PreflightRefused
from federation.coordinator.status import NodeState, StudyView
from federation.errors import FederationError, SpecError, TransportError
from federation.files import atomic_write, atomic_write_json
from federation.jsonio import parse_json_strictly
from federation.pipeline.run import ENGINES
from federation.protocol.bundle import pipeline_workflow_digest
from federation.protocol.messages import FINAL_STATUSES
from federation.spec import study_from_dict
from federation.versions import software_versions
from federation.web.auth import Principal
from federation.web.live import Dashboard
from federation.web.states import WesState, run_state, task_state
from federation.web.views import stage_times, study_files, study_links

WES_PREFIX = "/ga4gh/wes/v1"
WORKFLOW_TYPE = "federation-study"
WORKFLOW_TYPE_VERSIONS = ("1",)
WES_VERSION = "1.1.0"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000  # a page of run summaries stays small even for a busy coordinator
# The engines a study may name, with the distribution whose version the service reports.
ENGINE_DISTRIBUTIONS = {"snakemake": "snakemake", "cwl": "cwltool"}
TAGS_SUFFIX = ".wes-tags.json"
# The errors the WES file documents, with its words, for the app's own OpenAPI.
ERRORS = {
    400: "The request is malformed.",
    401: "The request is unauthorized.",
    403: "The requester is not authorized to perform this action.",
    404: "The requested workflow run wasn't found.",
    500: "An unexpected error occurred.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    schema = {
        "type": "object",
        "properties": {"msg": {"type": "string"}, "status_code": {"type": "integer"}},
    }
    return {
        code: {"description": ERRORS[code], "content": {"application/json": {"schema": schema}}}
        for code in codes
    }


def wes_time(value: str | None) -> str | None:
    """An ISO 8601 time as WES writes it: %Y-%m-%dT%H:%M:%SZ (UTC)."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    if moment.utcoffset():
        moment = moment - moment.utcoffset()  # type: ignore[operator]
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _present(document: dict[str, Any]) -> dict[str, Any]:
    """WES fields are strings, not nullable: a field without a value is left out."""
    return {key: value for key, value in document.items() if value is not None}


def build_router(dashboard: Dashboard, reader: Any, admin: Any) -> APIRouter:
    """The WES routes; `reader` and `admin` are the app's dependencies that identify a caller."""
    router = APIRouter(prefix=WES_PREFIX, tags=["GA4GH WES 1.1"])
    Reader = Annotated[Principal, Depends(reader)]
    Admin = Annotated[Principal, Depends(admin)]

    def view_of(run_id: str) -> StudyView:
        try:
            return dashboard.view(run_id)
        except SpecError:
            raise HTTPException(
                404, f"run '{run_id}': no such run; see GET {WES_PREFIX}/runs"
            ) from None

    def tags_of(run_id: str) -> dict[str, str]:
        path = dashboard.history_dir / f"{run_id}{TAGS_SUFFIX}"
        tags = parse_json_strictly(path.read_bytes()) if path.exists() else {}
        return {str(key): str(value) for key, value in tags.items()}

    def end_time(view: StudyView) -> str | None:
        if run_state(view) in (WesState.QUEUED, WesState.RUNNING, WesState.INITIALIZING):
            return None
        final = [event["time"] for event in view.events if str(event["event"]).startswith("study_")]
        return wes_time(final[-1]) if final else None

    def summary(view: StudyView) -> dict[str, Any]:
        return _present(
            {
                "run_id": view.study_id,
                "state": run_state(view).value,
                "start_time": wes_time(view.submitted_at),
                "end_time": end_time(view),
                "tags": tags_of(view.study_id),
            }
        )

    def task_log(view: StudyView, node: NodeState) -> dict[str, Any]:
        times = stage_times(list(view.events), node.node_id)
        start = times.get("approved") or times.get("running")
        final = node.status in FINAL_STATUSES
        logs = [f"{node.status.value} since {node.since}"]
        if node.category:
            logs.append(node.category)
        logs += [f"{name}: {outcome.describe()}" for name, outcome in node.analyses.items()]
        return _present(
            {
                "id": node.task_id,
                "name": f"node {node.node_id}",
                "start_time": wes_time(start),
                "end_time": wes_time(node.since) if final else None,
                "system_logs": logs,
                "state": task_state(node).value,  # beyond the TaskLog schema, which allows it
                "node_id": node.node_id,
            }
        )

    def outputs(request: Request, study_id: str) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        files = study_files(dashboard.results_dir(study_id), study_id)
        links = study_links(dashboard, study_id)
        return {
            "meta": {
                item["path"].removeprefix("meta/"): base + item["url"]
                for item in files
                if item["path"].startswith("meta/")
            },
            "files": [base + item["url"] for item in files],
            **{name: base + url for name, url in links.items() if url},
        }

    def page(items: list[Any], page_size: int | None, page_token: str | None) -> tuple[list, str]:
        size = DEFAULT_PAGE_SIZE if page_size is None else page_size
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise HTTPException(400, f"page_size {size}: outside 1..{MAX_PAGE_SIZE}; ask for less")
        start = 0
        if page_token:
            if not page_token.isdigit() or int(page_token) > len(items):
                raise HTTPException(
                    400, f"page_token '{page_token[:40]}': not one this server gave"
                )
            start = int(page_token)
        end = start + size
        return items[start:end], str(end) if end < len(items) else ""

    @router.get("/service-info", responses=error_responses(400, 401, 403, 500))
    def service_info(request: Request, who: Reader) -> dict[str, Any]:
        """GetServiceInfo: what this coordinator runs, and how many runs are in which state."""
        versions = software_versions()
        counts = {state.value: 0 for state in WesState}
        for view in dashboard.views():
            counts[run_state(view).value] += 1
        coordinator_id = dashboard.coordinator.settings.coordinator_id
        return {
            "id": f"org.federation.{coordinator_id}.wes",
            "name": f"federation coordinator '{coordinator_id}' (GA4GH WES)",
            "type": {"group": "org.ga4gh", "artifact": "wes", "version": WES_VERSION},
            "organization": {"name": coordinator_id, "url": str(request.base_url)},
            "version": __version__,
            "workflow_type_versions": {
                WORKFLOW_TYPE: {"workflow_type_version": list(WORKFLOW_TYPE_VERSIONS)}
            },
            "supported_wes_versions": [WES_VERSION],
            "supported_filesystem_protocols": ["file", "http"],
            "workflow_engine_versions": {
                engine: {"workflow_engine_version": [versions.get(dist, "unknown")]}
                for engine, dist in ENGINE_DISTRIBUTIONS.items()
            },
            "default_workflow_engine_parameters": [],
            "system_state_counts": counts,
            "auth_instructions_url": f"{str(request.base_url).rstrip('/')}/login",
            "tags": {"approved_workflow_url": pipeline_workflow_digest()},
        }

    @router.get("/runs", responses=error_responses(400, 401, 403, 500))
    def list_runs(
        who: Reader, page_size: int | None = None, page_token: str | None = None
    ) -> dict[str, Any]:
        """ListRuns: every study, newest first."""
        runs, next_token = page(list(reversed(dashboard.views())), page_size, page_token)
        return {"runs": [summary(view) for view in runs], "next_page_token": next_token}

    @router.post("/runs", responses=error_responses(400, 401, 403, 500))
    def run_workflow(
        who: Admin,
        workflow_params: Annotated[str | None, Form()] = None,
        workflow_type: Annotated[str | None, Form()] = None,
        workflow_type_version: Annotated[str | None, Form()] = None,
        tags: Annotated[str | None, Form()] = None,
        workflow_engine: Annotated[str | None, Form()] = None,
        workflow_engine_version: Annotated[str | None, Form()] = None,
        workflow_engine_parameters: Annotated[str | None, Form()] = None,
        workflow_url: Annotated[str | None, Form()] = None,
        workflow_attachment: Annotated[list[UploadFile] | None, File()] = None,
    ) -> dict[str, str]:
        """RunWorkflow: submit a study (pre-flight first; nothing is sent if a node refuses)."""
        if workflow_type != WORKFLOW_TYPE:
            raise HTTPException(
                400, f"workflow_type '{workflow_type}': not served here; use '{WORKFLOW_TYPE}'"
            )
        if workflow_type_version not in WORKFLOW_TYPE_VERSIONS:
            raise HTTPException(
                400,
                f"workflow_type_version '{workflow_type_version}': not served here; use "
                f"'{WORKFLOW_TYPE_VERSIONS[-1]}'",
            )
        approved = pipeline_workflow_digest()
        if workflow_url != approved:
            raise HTTPException(
                400,
                f"workflow_url '{workflow_url}': not the pipeline this coordinator ships; "
                f"use its digest {approved} (service-info tags.approved_workflow_url)",
            )
        if workflow_attachment:
            raise HTTPException(
                400, "workflow_attachment: not accepted; the nodes run only the approved pipeline"
            )
        if workflow_engine_parameters not in (None, "", "{}"):
            raise HTTPException(
                400, "workflow_engine_parameters: not accepted; the nodes choose their resources"
            )
        params = _json_object(workflow_params, "workflow_params", "the study spec as JSON")
        run_tags = _json_object(tags or "{}", "tags", 'a JSON object of strings, e.g. {"pi": "x"}')
        if workflow_engine is not None:
            if workflow_engine not in ENGINES:
                raise HTTPException(
                    400,
                    f"workflow_engine '{workflow_engine}': unknown; use one of {', '.join(ENGINES)}",
                )
            params.setdefault("engine", workflow_engine)
            if params["engine"] != workflow_engine:
                raise HTTPException(
                    400,
                    f"workflow_engine '{workflow_engine}': the study says engine "
                    f"'{params['engine']}'; give one",
                )
        try:
            study = study_from_dict(json.loads(json.dumps(params)), "WES workflow_params")
        except SpecError as error:
            raise HTTPException(400, str(error)) from None
        path = dashboard.history_dir / "wes" / f"{study.study_id}.study.yaml"
        atomic_write(path, yaml.safe_dump(params, sort_keys=False))
        with dashboard.lock:
            try:
                dashboard.coordinator.submit(path)
            except (PreflightRefused, SpecError) as error:
                raise HTTPException(400, str(error).replace("\n", " | ")) from None
            except (MailboxesUnreachable, TransportError) as error:
                raise HTTPException(500, str(error).replace("\n", " | ")) from None
            except FederationError as error:
                raise HTTPException(400, str(error).replace("\n", " | ")) from None
            atomic_write_json(dashboard.history_dir / f"{study.study_id}{TAGS_SUFFIX}", run_tags)
        dashboard.changed()
        return {"run_id": study.study_id}

    @router.get("/runs/{run_id}", responses=error_responses(401, 403, 404, 500))
    def get_run_log(request: Request, run_id: str, who: Reader) -> dict[str, Any]:
        """GetRunLog: the study's request, state, node tasks and outputs."""
        view = view_of(run_id)
        tasks = dashboard.coordinator.ledger.tasks(run_id)
        digest = tasks[0].envelope.get("workflow_digest") if tasks else None
        spec = dashboard.coordinator.ledger.study(run_id).spec
        return {
            "run_id": run_id,
            "request": _present(
                {
                    "workflow_params": spec.raw,
                    "workflow_type": WORKFLOW_TYPE,
                    "workflow_type_version": WORKFLOW_TYPE_VERSIONS[-1],
                    "workflow_url": digest or "",
                    "workflow_engine": spec.engine,
                    "tags": tags_of(run_id),
                }
            ),
            "state": run_state(view).value,
            "run_log": _present(
                {
                    "name": view.title,
                    "start_time": wes_time(view.submitted_at),
                    "end_time": end_time(view),
                    "system_logs": [f"study {view.status}; quorum {view.quorum}"],
                }
            ),
            "task_logs_url": f"{str(request.base_url).rstrip('/')}{WES_PREFIX}/runs/{run_id}/tasks",
            "task_logs": [task_log(view, node) for node in view.nodes],
            "outputs": outputs(request, run_id),
        }

    @router.get("/runs/{run_id}/status", responses=error_responses(401, 403, 404, 500))
    def get_run_status(run_id: str, who: Reader) -> dict[str, str]:
        """GetRunStatus: the run's state."""
        return {"run_id": run_id, "state": run_state(view_of(run_id)).value}

    @router.get("/runs/{run_id}/tasks", responses=error_responses(401, 403, 404, 500))
    def list_tasks(
        run_id: str, who: Reader, page_size: int | None = None, page_token: str | None = None
    ) -> dict[str, Any]:
        """ListTasks: one task per node, in the order of the run log."""
        view = view_of(run_id)
        tasks, next_token = page(
            [task_log(view, node) for node in view.nodes], page_size, page_token
        )
        return {"task_logs": tasks, "next_page_token": next_token}

    @router.get("/runs/{run_id}/tasks/{task_id}", responses=error_responses(401, 403, 404, 500))
    def get_task(run_id: str, task_id: str, who: Reader) -> dict[str, Any]:
        """GetTask: one node's task."""
        view = view_of(run_id)
        for node in view.nodes:
            if node.task_id == task_id:
                return task_log(view, node)
        raise HTTPException(404, f"task '{task_id}': not a task of run '{run_id}'")

    @router.post("/runs/{run_id}/cancel", responses=error_responses(401, 403, 404, 500))
    def cancel_run(run_id: str, who: Admin) -> dict[str, str]:
        """CancelRun: the coordinator's signed cancellation, recorded with the token's name."""
        view_of(run_id)
        with dashboard.lock:
            dashboard.coordinator.cancel(run_id, by=who.name, reason="cancelled through GA4GH WES")
        dashboard.changed()
        return {"run_id": run_id}

    return router


def _json_object(text: str | None, field: str, fix: str) -> dict[str, Any]:
    if not text:
        raise HTTPException(400, f"{field}: missing; send {fix}")
    try:
        value = json.loads(text)
    except ValueError as error:
        raise HTTPException(400, f"{field}: not JSON ({error}); send {fix}") from None
    if not isinstance(value, dict):
        raise HTTPException(400, f"{field}: a JSON {type(value).__name__}; send {fix}")
    return value
