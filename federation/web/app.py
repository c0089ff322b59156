"""The FastAPI application: pages, their JSON twins, files, cancel, events, and WES.

    GET  /login, POST /login, POST /logout     the token login (an HttpOnly, SameSite cookie)
    GET  /studies          /api/studies        every study: state, WES state, quorum progress
    GET  /studies/{id}     /api/studies/{id}   the node x stage matrix, live meta-analysis,
                                               what changed, links to report, crate and files
    POST /studies/{id}/cancel  /api/studies/{id}/cancel   admin only: the signed cancellation
    GET  /nodes            /api/nodes          the node directory from their signed policies
    GET  /files/{id}/{path}                    a file of results/<study_id>/ (read role)
    GET  /api/events                           server-sent events: "change" when a page would
    /ga4gh/wes/v1/...                          GA4GH WES 1.1 (`web.wes`)

A page asked for without a token sends the browser to /login; a wrong token is 401 everywhere;
a read-only token asking to change something is 403. Errors under /ga4gh/wes/v1 are WES
`ErrorResponse`s ({"msg", "status_code"}), elsewhere {"detail"} or a page.
"""

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import StreamingResponse

from federation import __version__
from federation.errors import SpecError
from federation.web.auth import COOKIE_NAME, Principal, identify, presented_token
from federation.web.live import Dashboard
from federation.web.views import nodes_document, studies_document, study_document
from federation.web.wes import WES_PREFIX, build_router

PACKAGE_DIR = Path(__file__).resolve().parent
COOKIE_MAX_AGE_SECONDS = 12 * 3600  # a working day; then log in again
EVENT_WAIT_SECONDS = 2.0  # how long one wait for a change blocks a worker thread
EVENT_STREAM_SECONDS = 60.0  # a stream ends after this; EventSource reconnects by itself
MAX_REASON_LENGTH = 200  # a cancellation's reason goes into the audit log: one line


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(("/api/", WES_PREFIX))


def create_app(dashboard: Dashboard, *, background: bool = True) -> FastAPI:
    """The application over `dashboard`; with `background`, a thread ticks it while serving."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = threading.Thread(target=dashboard.run, args=(stop,), daemon=True)
        if background:
            thread.start()
        yield
        stop.set()
        dashboard.changed()  # wake the event streams so they end
        if background:
            thread.join(timeout=60)

    app = FastAPI(
        title="federation coordinator: dashboard and GA4GH WES 1.1",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    templates = Jinja2Templates(directory=str(PACKAGE_DIR / "templates"))
    app.mount("/static", StaticFiles(directory=str(PACKAGE_DIR / "static")), name="static")

    def reader(request: Request) -> Principal:
        presented = presented_token(
            request.headers.get("authorization"), request.cookies.get(COOKIE_NAME)
        )
        who = identify(dashboard.settings.tokens, presented)
        if who is None:
            detail = (
                "token not recognised; log in again with a token from the coordinator config"
                if presented
                else "no token; send Authorization: Bearer TOKEN or log in at /login"
            )
            raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
        return who

    def admin(who: Annotated[Principal, Depends(reader)]) -> Principal:
        if not who.admin:
            raise HTTPException(
                403,
                f"token of '{who.name}' is read-only; submitting and cancelling need an admin "
                "token (dashboard.tokens role: admin)",
            )
        return who

    Reader = Annotated[Principal, Depends(reader)]
    Admin = Annotated[Principal, Depends(admin)]

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        detail = str(error.detail)
        if request.url.path.startswith(WES_PREFIX):
            return JSONResponse(
                {"msg": detail, "status_code": error.status_code},
                error.status_code,
                headers=error.headers,
            )
        if _wants_json(request):
            return JSONResponse({"detail": detail}, error.status_code, headers=error.headers)
        presented = presented_token(
            request.headers.get("authorization"), request.cookies.get(COOKIE_NAME)
        )
        if error.status_code == 401 and not presented and request.method == "GET":
            return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)
        return templates.TemplateResponse(
            request,
            "error.html",
            {"status": error.status_code, "detail": detail, "who": None},
            status_code=error.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', 'invalid')}; fix the request"
        return await http_error(request, StarletteHTTPException(400, detail))

    def render(request: Request, name: str, who: Principal, document: dict[str, Any]) -> Response:
        return templates.TemplateResponse(
            request, name, {"doc": document, "who": who, "version": dashboard.version}
        )

    def study_or_404(study_id: str) -> dict[str, Any]:
        try:
            return study_document(dashboard, study_id)
        except SpecError as error:
            raise HTTPException(404, str(error)) from None

    def page_and_twin(path: str, name: str, document: Callable[..., dict[str, Any]]) -> None:
        """GET `path` renders template `name`; GET /api`path` returns the same document."""

        async def page(request: Request, who: Reader) -> Response:
            values = await run_in_threadpool(document, **request.path_params)
            return render(request, name, who, values)

        async def twin(request: Request, who: Reader) -> dict[str, Any]:
            return await run_in_threadpool(document, **request.path_params)

        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
        app.add_api_route(f"/api{path}", twin, methods=["GET"], tags=["dashboard"])

    page_and_twin("/studies", "studies.html", lambda: studies_document(dashboard))
    page_and_twin("/studies/{study_id}", "study.html", study_or_404)
    page_and_twin("/nodes", "nodes.html", lambda: nodes_document(dashboard))

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse("/studies", 303)

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request, next: str = "/studies") -> Response:
        return templates.TemplateResponse(request, "login.html", {"next": next, "who": None})

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        token: Annotated[str, Form()],
        next: Annotated[str, Form()] = "/studies",
    ) -> Response:
        who = identify(dashboard.settings.tokens, token.strip())
        if who is None:
            return templates.TemplateResponse(
                request,
                "login.html",
                {"next": next, "who": None, "error": "token not recognised"},
                status_code=401,
            )
        target = next if next.startswith("/") and not next.startswith("//") else "/studies"
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE_NAME,
            token.strip(),
            max_age=COOKIE_MAX_AGE_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE_NAME)
        return response

    def cancel(study_id: str, who: Principal, reason: str | None) -> dict[str, Any]:
        study_or_404(study_id)
        said = (reason or "").strip().replace("\n", " ")[:MAX_REASON_LENGTH] or None
        with dashboard.lock:
            cancelled = dashboard.coordinator.cancel(study_id, by=who.name, reason=said)
        dashboard.changed()
        return {"study_id": study_id, "cancelled_tasks": cancelled, "by": who.name}

    @app.post("/studies/{study_id}/cancel", include_in_schema=False)
    async def cancel_page(
        study_id: str, who: Admin, reason: Annotated[str | None, Form()] = None
    ) -> Response:
        await run_in_threadpool(cancel, study_id, who, reason)
        return RedirectResponse(f"/studies/{quote(study_id)}", 303)

    @app.post("/api/studies/{study_id}/cancel", tags=["dashboard"])
    async def cancel_api(study_id: str, who: Admin, reason: str | None = None) -> dict[str, Any]:
        """Cancel a study (admin): the coordinator's signed cancellation to every open task."""
        return await run_in_threadpool(cancel, study_id, who, reason)

    @app.get("/files/{study_id}/{path:path}", tags=["dashboard"])
    def study_file(study_id: str, path: str, who: Reader) -> Response:
        """A file of the study's results folder (never outside it)."""
        root = dashboard.results_dir(study_id).resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root) or not target.is_file() or "/." in f"/{path}":
            raise HTTPException(404, f"file '{path}': not in study '{study_id}'s results")
        return FileResponse(target)

    @app.get("/api/events", tags=["dashboard"])
    async def events(request: Request, who: Reader) -> StreamingResponse:
        """Server-sent events: `change` (with a version number) when a page would change."""

        async def stream() -> AsyncIterator[str]:
            seen = -1
            ends = time.monotonic() + EVENT_STREAM_SECONDS
            yield "retry: 2000\n\n"
            while time.monotonic() < ends and not await request.is_disconnected():
                version = await run_in_threadpool(
                    dashboard.wait_for_change, seen, EVENT_WAIT_SECONDS
                )
                if version != seen:
                    seen = version
                    yield f"event: change\ndata: {version}\n\n"
                else:
                    yield ": still here\n\n"
                await asyncio.sleep(0)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    app.include_router(build_router(dashboard, reader, admin))
    return app
