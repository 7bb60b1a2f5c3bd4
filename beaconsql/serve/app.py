"""The ASGI app of `beaconsql serve` (Starlette): the routes, the error mapping, the JSON.

- ``/api/v1/...``: the portal's reads (:data:`beaconsql.serve.routes.API_ROUTES`), with the
  runner's paths, parameters and JSON;
- ``/jobs/{jobspec_id}``: the live progress page (``static/``), which polls
  ``/jobs/{jobspec_id}/progress`` (``/jobs/{jobspec_id}/events`` streams the same as
  server-sent events);
- ``/metrics`` (Prometheus) and ``/healthz``.

Statuses (SPEC "Serving it"), body ``{"error": "..."}`` for all but 200: 400 a malformed
parameter or execution id, 404 an unknown job or an execution id the view does not show, 503
the database unreachable or a read it cancelled (after one retry; ``Retry-After: 1``), 500
anything else, without details. The database's messages, the DSN and tracebacks go to the log
(password redacted), never to a client.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount
from starlette.routing import Route as StarletteRoute
from starlette.staticfiles import StaticFiles

from beaconsql import db, migration
from beaconsql.errors import (
    BeaconsqlError,
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    NotFoundError,
    NotMigratedError,
)
from beaconsql.serve.metrics import Metrics
from beaconsql.serve.reads import Answer, Reader, SharedReads
from beaconsql.serve.routes import API_ROUTES, PROGRESS_ROUTE, Route
from beaconsql.sqlfiles import named_queries

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
API_PREFIX = "/api/v1"
KEEPALIVE_SECONDS = 15.0
# Library errors by the status they answer; anything else is a 500.
STATUS_OF: tuple[tuple[type[BeaconsqlError], int], ...] = (
    (InvalidArgumentError, 400),
    (NotFoundError, 404),
    (DatabaseUnavailableError, 503),
)


@dataclass(frozen=True)
class Settings:
    """How to serve: the database (*read_dsn*: a physical standby for every read), CORS
    origins, the per-request statement timeout (ms), pool sizes, how long an answer is shared
    among requests for the same thing (s; 0: never) and the event stream's interval (s)."""

    dsn: str
    read_dsn: str | None = None
    cors_origins: tuple[str, ...] = ()
    statement_timeout_ms: int = 5000
    pool_min: int = 1
    pool_max: int = 10
    share_seconds: float = 1.0
    stream_seconds: float = 1.0
    pool_wait_seconds: float = 3.0

    @property
    def reads_from(self) -> str:
        return self.read_dsn or self.dsn


class Server:
    """What the endpoints share: the reader (pool), shared answers, metrics, the head."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reader = Reader(
            settings.reads_from,
            name="beaconsql-serve",
            min_size=settings.pool_min,
            max_size=settings.pool_max,
            statement_timeout_ms=settings.statement_timeout_ms,
            wait=settings.pool_wait_seconds,
        )
        self.shared = SharedReads(settings.share_seconds)
        self.metrics = Metrics(self.reader)
        self.head = migration.head_revision()

    @staticmethod
    def key(route: Route, path: dict[str, Any], query: dict[str, Any]) -> Hashable:
        return (route.path, tuple(sorted(path.items())), tuple(sorted(query.items())))

    def answer(self, route: Route, path: dict[str, Any], query: dict[str, Any]) -> Answer:
        """Read *route* (or take the answer shared for the same path and parameters)."""
        return self.shared.get(
            self.key(route, path, query),
            lambda: encode(self.reader.read(lambda conn: route.run(conn, path, query))),
        )

    async def answer_async(
        self, route: Route, path: dict[str, Any], query: dict[str, Any]
    ) -> Answer:
        """:meth:`answer` from the event loop: a fresh shared answer without a thread hop."""
        fresh = self.shared.fresh(self.key(route, path, query))
        if fresh is not None:
            return fresh
        return await anyio.to_thread.run_sync(self.answer, route, path, query)


def encode(data: Any) -> bytes:
    """Encode *data* as compact UTF-8 JSON."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def error_response(status: int, message: str) -> Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return Response(
        encode({"error": message}), status, headers=headers, media_type="application/json"
    )


def json_response(answer: Answer, request: Request) -> Response:
    headers = {"ETag": answer.etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == answer.etag:
        return Response(status_code=304, headers=headers)
    return Response(answer.body, 200, headers=headers, media_type="application/json")


def failure(exc: BaseException, dsn: str) -> Response:
    """Map an exception to its response; log what a client must not see."""
    for kind, status in STATUS_OF:
        if isinstance(exc, kind):
            if status == 503:
                logger.warning("503: %s", exc)
            return error_response(status, str(exc))
    logger.error(
        "500: %s",
        db.redact_text("".join(traceback.format_exception(exc)).rstrip(), dsn),
    )
    return error_response(500, "internal error")


Endpoint = Callable[[Request], Awaitable[Response]]


def _observed(server: Server, name: str, endpoint: Endpoint) -> Endpoint:
    """Wrap an endpoint: errors to responses, and request metrics."""

    async def observed(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await endpoint(request)
        except Exception as exc:
            response = failure(exc, server.settings.reads_from)
        server.metrics.observe(name, response.status_code, time.perf_counter() - started)
        return response

    return observed


def _threaded(endpoint: Callable[[Request], Response]) -> Endpoint:
    """Run a blocking endpoint (it reads the database) in the thread pool."""

    async def threaded(request: Request) -> Response:
        return await anyio.to_thread.run_sync(endpoint, request)

    return threaded


def _read_endpoint(server: Server, route: Route) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        path = route.path_values(request.path_params)
        query = {p.name: p.parse(request.query_params) for p in route.params}
        return json_response(await server.answer_async(route, path, query), request)

    return endpoint


async def _page(request: Request) -> Response:
    return FileResponse(STATIC / "progress.html", headers={"Cache-Control": "no-cache"})


def _health_endpoint(server: Server) -> Callable[[Request], Response]:
    def healthz(request: Request) -> Response:
        row = server.reader.read(
            lambda conn: conn.execute(named_queries("queries/serve.sql")["health"]).fetchone()
        )
        revision, in_recovery, lag, _ = row if row else (None, None, None, None)
        body = {
            "database": "ok",
            "revision": revision,
            "head": server.head,
            "at_head": revision == server.head,
            "in_recovery": in_recovery,
            "replay_lag_seconds": lag,
        }
        if revision != server.head:
            body["error"] = f"the database is at revision {revision}; serve needs {server.head}"
            return Response(encode(body), 503, media_type="application/json")
        return Response(encode(body), 200, media_type="application/json")

    return healthz


def _metrics_endpoint(server: Server) -> Callable[[Request], Response]:
    def metrics(request: Request) -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


def _events_endpoint(server: Server) -> Callable[[Request], Any]:
    async def events(request: Request) -> Response:
        path = dict(request.path_params)
        server.metrics.observe("events", 200, 0.0)

        async def stream() -> AsyncIterator[bytes]:
            # Re-read every interval (through the shared answers), send only what changed, and
            # a comment line when nothing was sent for a while (proxies close idle streams).
            last = None
            quiet_since = time.monotonic()
            while True:
                try:
                    answer = await server.answer_async(PROGRESS_ROUTE, path, {})
                except Exception as exc:
                    response = failure(exc, server.settings.reads_from)
                    yield b"event: failure\ndata: " + bytes(response.body) + b"\n\n"
                else:
                    if answer.etag != last:
                        last = answer.etag
                        quiet_since = time.monotonic()
                        yield b"data: " + answer.body + b"\n\n"
                    elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                        quiet_since = time.monotonic()
                        yield b": keepalive\n\n"
                await anyio.sleep(server.settings.stream_seconds)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return events


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return error_response(status, message)


def create_app(settings: Settings, *, routes: tuple[Route, ...] = API_ROUTES) -> Starlette:
    """Return the ASGI app serving *routes* under ``/api/v1``, the page, /metrics, /healthz.

    The pool opens with the app (without waiting for the server) and closes with it.
    """
    server = Server(settings)
    api: list[BaseRoute] = [
        StarletteRoute(r.path, _observed(server, API_PREFIX + r.path, _read_endpoint(server, r)))
        for r in routes
    ]
    table: list[BaseRoute] = [
        Mount(API_PREFIX, routes=api),
        StarletteRoute(
            PROGRESS_ROUTE.path,
            _observed(server, "progress", _read_endpoint(server, PROGRESS_ROUTE)),
        ),
        StarletteRoute("/jobs/{jobspec_id}/events", _events_endpoint(server)),
        StarletteRoute("/jobs/{jobspec_id}", _observed(server, "page", _page)),
        StarletteRoute(
            "/healthz", _observed(server, "healthz", _threaded(_health_endpoint(server)))
        ),
        StarletteRoute("/metrics", _threaded(_metrics_endpoint(server))),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "HEAD", "OPTIONS"],
                allow_headers=["*"],
                max_age=600,
            )
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.reader.open()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(server.reader.close)

    app = Starlette(
        routes=table,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
    )
    app.state.server = server
    return app


def check_database(settings: Settings) -> None:
    """Check, before serving, that the read server is migrated, granted and the right kind.

    Raises NotMigratedError when it is not at the head revision (or lacks revision 0005's
    functions), ConfigurationError when the connecting role may not execute them (run
    ``beaconsql grant``) or when *read_dsn* is not a physical standby of *dsn*'s server (a
    logical replica has its own xmins: every row there would count as not mirrored). An
    unreachable server is only logged: serve starts and answers 503 until it is up.
    """
    target = _health(settings.reads_from, "the read server" if settings.read_dsn else None)
    if target is None:
        return
    revision, in_recovery, _, system_id = target
    head = migration.head_revision()
    if revision != head:
        raise NotMigratedError(
            f"the database is at revision {revision}; serve needs {head}. "
            "Run `beaconsql upgrade` on the primary."
        )
    if not settings.read_dsn:
        return
    primary = _health(settings.dsn, "the primary")
    if primary is None:
        if not in_recovery:
            raise ConfigurationError(
                "--read-dsn is not a standby (pg_is_in_recovery() is false) and the primary "
                "cannot be reached to compare: give a physical hot standby of the primary."
            )
        return
    if primary[3] != system_id:
        raise ConfigurationError(
            "--read-dsn is not a physical standby of the primary (their system identifiers "
            "differ: a logical replica, or another cluster). A logical replica has its own "
            "xmins, so every region result there would count as not mirrored; give a physical "
            "hot standby (pg_basebackup -R), or leave --read-dsn out."
        )
    if not in_recovery:
        logger.warning("--read-dsn is the primary itself (not in recovery): reads go there")


def _health(dsn: str, what: str | None) -> tuple[Any, ...] | None:
    try:
        with db.connect(dsn, autocommit=True) as conn:
            return conn.execute(named_queries("queries/serve.sql")["health"]).fetchone()
    except DatabaseUnavailableError as exc:
        logger.warning("%s: %s; serving 503 until it is up", what or "the database", exc)
        return None
    except psycopg.errors.UndefinedFunction:
        raise NotMigratedError(
            f"{what or 'the database'} lacks serve's functions (revision 0005): run "
            "`beaconsql upgrade` on the primary."
        ) from None
    except psycopg.errors.InsufficientPrivilege:
        raise ConfigurationError(
            f"the role connecting to {what or 'the database'} may not execute serve's "
            "functions: run `beaconsql grant` and grant its portal role to that login role."
        ) from None


@contextlib.contextmanager
def serving(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    root_path: str = "",
    routes: tuple[Route, ...] = API_ROUTES,
) -> Iterator[str]:
    """Serve in a background thread (uvicorn) while the block runs; yield the base URL.

    Port 0 picks a free port. *root_path* is the prefix a reverse proxy strips (uvicorn's root
    path): the URL yielded is the server's own, without it. For tests and benchmarks.
    """
    import uvicorn

    config = uvicorn.Config(
        create_app(settings, routes=routes),
        host=host,
        port=port,
        root_path=root_path,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="beaconsql-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise BeaconsqlError(f"the HTTP server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def run(settings: Settings, *, host: str, port: int, root_path: str = "") -> None:
    """Serve until interrupted (uvicorn); call :func:`check_database` first.

    *root_path* is the prefix the reverse proxy strips before it forwards a request.
    """
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        root_path=root_path,
        server_header=False,
        log_level="info",
    )
