"""The routes of `beaconsql serve`: one declaration per portal read.

A :class:`Route` names the runner's path, the :mod:`beaconsql.portal` function that answers
it and how its query parameters are parsed; :mod:`beaconsql.serve.app` does the rest for
every route alike (the pool, the transaction, the error mapping, the JSON, sharing). Serving
a new portal read is one more entry in :data:`API_ROUTES`, e.g.::

    Route("/executions/{execution_id:int}/receipt", portal.execution_receipt),

Path parameters are passed by keyword (those in :attr:`Route.ids` as integers), then the query
parameters, by their :attr:`Param.name`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from beaconsql import portal
from beaconsql.errors import InvalidArgumentError, NotFoundError
from beaconsql.sqlfiles import named_queries


@dataclass(frozen=True)
class Param:
    """A query parameter: its keyword for the read, the names it is read from (first found
    wins), its default, and whether it is *required* (absent or empty: a 400, before any
    read)."""

    name: str
    aliases: tuple[str, ...]
    default: Any = None
    required: bool = False

    def parse(self, query: Mapping[str, str]) -> Any:
        """Return the parameter's value from *query*; raise InvalidArgumentError when malformed
        or, if required, missing."""
        for alias in self.aliases:
            if alias in query and (query[alias] or not self.required):
                return self.convert(alias, query[alias])
        if self.required:
            raise InvalidArgumentError(f"{self.aliases[0]} query parameter is required")
        return self.default

    def convert(self, alias: str, text: str) -> Any:
        return text


@dataclass(frozen=True)
class IntParam(Param):
    """An integer parameter with the runner's clamp: a value outside *low*..*high* gives the
    default, as the runner's handlers do (runner-app.md section 3.2); text that is not an
    integer is a 400."""

    default: int = 0
    low: int = 0
    high: int | None = None

    def convert(self, alias: str, text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise InvalidArgumentError(f"{alias} must be an integer, got {text[:40]!r}") from None
        if value < self.low or (self.high is not None and value > self.high):
            return int(self.default)
        return value


@dataclass(frozen=True)
class TextParam(Param):
    """A text parameter, lower-cased (the runner compares ``include`` case-insensitively)."""

    def convert(self, alias: str, text: str) -> str:
        return text.strip().lower()


@dataclass(frozen=True)
class Route:
    """One read: the path under ``/api/v1`` (Starlette syntax), the function answering it
    (``read(conn, **path_params, **query_params)``, returning JSON-ready data), its query
    parameters, *known*: the path parameter naming a job that must exist (else 404), and
    *ids*: the path parameters that are execution ids (else 400)."""

    path: str
    read: Callable[..., Any]
    params: tuple[Param, ...] = ()
    known: str | None = None
    ids: tuple[str, ...] = ()

    def path_values(self, path: Mapping[str, str]) -> dict[str, Any]:
        """Return the path parameters as the read takes them (before any read: a malformed
        execution id, or U+0000 in a job id, raises InvalidArgumentError)."""
        portal.require_text(path)
        return {k: portal.parse_execution_id(v) if k in self.ids else v for k, v in path.items()}

    def run(
        self, conn: psycopg.Connection[Any], path: Mapping[str, Any], query: Mapping[str, Any]
    ) -> Any:
        """Answer the route on *conn*: the 404 check, then the read."""
        if self.known is not None and not job_known(conn, str(path[self.known])):
            raise NotFoundError("job not found")
        return self.read(conn, **path, **query)


def job_known(conn: psycopg.Connection[Any], jobspec_id: str) -> bool:
    """Tell whether *jobspec_id* names a job: a jobs row or a run (SPEC "Portal reads")."""
    row = conn.execute(
        named_queries("queries/serve.sql")["job_known"], {"jobspec_id": jobspec_id}
    ).fetchone()
    return bool(row and row[0])


def job(
    conn: psycopg.Connection[Any], jobspec_id: str, *, include: str, limit: int, offset: int
) -> dict[str, Any]:
    """``GET /api/v1/jobs/{id}``: ``{"job", "status"}``, plus a page of ``executions`` with
    ``include=executions`` (or ``all``), as the runner's GetJob (runner-app.md section 3.2).
    ``include=latest`` (the latest receipt) is not served: it answers like no include."""
    if include in ("executions", "all"):
        return portal.job_with_executions(conn, jobspec_id, limit=limit, offset=offset)
    answer = portal.job_with_executions(conn, jobspec_id, limit=1, offset=0)
    return {"job": answer["job"], "status": answer["status"]}


def progress(conn: psycopg.Connection[Any], jobspec_id: str) -> dict[str, Any]:
    """The live page's data: :func:`beaconsql.portal.progress` as JSON."""
    return portal.progress(conn, jobspec_id).to_dict()


EXEC_LIMIT = IntParam(
    "limit",
    ("exec_limit", "limit"),
    default=portal.PAGE_LIMIT_DEFAULT,
    low=1,
    high=portal.PAGE_LIMIT_MAX,
)
EXEC_OFFSET = IntParam(
    "offset", ("exec_offset", "offset"), default=0, low=0, high=portal.BIGINT_MAX
)
# GET /api/v1/executions and /diffs take limit (and offset) by these names (runner-app.md
# section 3.3), within the same bounds as ?include=executions.
LIMIT = IntParam(
    "limit", ("limit",), default=portal.PAGE_LIMIT_DEFAULT, low=1, high=portal.PAGE_LIMIT_MAX
)
OFFSET = IntParam("offset", ("offset",), default=0, low=0, high=portal.BIGINT_MAX)

# The runner's read routes, under /api/v1 (runner-app.md section 3). Most specific first.
API_ROUTES: tuple[Route, ...] = (
    Route("/jobs/{jobspec_id}/executions/all", portal.executions_all),
    Route(
        "/jobs/{jobspec_id}",
        job,
        (TextParam("include", ("include",), default=""), EXEC_LIMIT, EXEC_OFFSET),
        known="jobspec_id",
    ),
    Route("/executions", portal.executions_list, (LIMIT, OFFSET)),
    Route("/executions/{execution_id}/details", portal.execution_details, ids=("execution_id",)),
    Route("/executions/{execution_id}/receipt", portal.execution_receipt, ids=("execution_id",)),
    Route(
        "/executions/{execution_id}/bias-score",
        portal.execution_bias_score,
        ids=("execution_id",),
    ),
    Route(
        "/executions/{jobspec_id}/cross-region",
        portal.cross_region_executions,
        (Param("model_id", ("model_id",), required=True), Param("question_id", ("question_id",))),
        known="jobspec_id",
    ),
    Route(
        "/executions/{jobspec_id}/cross-region-diff", portal.cross_region_diff, known="jobspec_id"
    ),
    Route("/diffs", portal.diffs, (LIMIT,)),
)

# The live page's data request (polled by the page, or streamed by /jobs/{id}/events).
PROGRESS_ROUTE = Route("/jobs/{jobspec_id}/progress", progress)
