"""The portal's reads, against ``executions_unified`` (plus ``jobs`` for the spec), shaped as
the runner's API returns them (SPEC "Portal reads"; runner-app.md section 3).

- :func:`executions_all`: ``GET /api/v1/jobs/{id}/executions/all`` → ``{"executions": [...]}``;
  an unknown job or a job without rows gives ``[]`` (the runner's ``null`` broke its portal).
- :func:`job_with_executions`: ``GET /api/v1/jobs/{id}?include=executions`` → ``{"job", "status",
  "executions"}``, paged with limit/offset (default 20, at most 200, as the runner).
- :func:`executions_list`: ``GET /api/v1/executions`` → a page of every job's rows, with total.
- :func:`execution_details`, :func:`execution_receipt`, :func:`execution_bias_score`:
  ``GET /api/v1/executions/{id}/details``, ``/receipt``, ``/bias-score``; an id the view does
  not show (unknown, or a row hidden by a better candidate of its key) raises NotFoundError.
- :func:`cross_region_executions`: ``GET /api/v1/executions/{jobId}/cross-region?model_id=``
  (``&question_id=``): the newest row per region, with the runner's region labels.
- :func:`cross_region_diff`: ``GET /api/v1/executions/{jobId}/cross-region-diff``.
- :func:`diffs`: ``GET /api/v1/diffs``: the jobs with completed rows in two regions or more.
- :func:`progress`: what the portal's Live Progress shows, per region, model and question.

The runner-app.md sections name the fields; the envelopes around them, which it does not give,
are the runner's own handlers' (``runner-app/internal/api``). What those handlers compute
beyond the rows they read (constant placeholder scores, a heuristic text analysis) is left out:
beaconsql serves reads, and a constant would pass for a measurement.

Rows the view derives for a region result that is not mirrored yet have ``"id": null``. JSON
is decoded by :func:`decode_json` (any depth), times are formatted from naive UTC: no value a
row can hold makes a read fail (SPEC "Values a client cannot read"). A job, model or question id
holding U+0000, which no PostgreSQL text can hold, raises InvalidArgumentError.

The reads of one job or one execution select through ``executions_unified_of_job`` and
``executions_unified_of_execution``, whose plan of the view each connection keeps: planning the
view is most of an unprepared read's cost, and through a pooler psycopg's prepared statements
are turned off (:func:`beaconsql.db.adapt_to_pooler`).
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from beaconsql import db
from beaconsql.errors import InvalidArgumentError, NotFoundError
from beaconsql.sqlfiles import named_queries
from beaconsql.writer import FINISHED_PAIR_STATUSES as FINISHED
from beaconsql.writer import MAX_JSON_DEPTH
from beaconsql.writer import PAIR_STATUSES as STATUSES

DEFAULT_MODEL = "llama3.2-1b"
PAGE_LIMIT_DEFAULT = 20
PAGE_LIMIT_MAX = 200
# PostgreSQL's bigint: the largest OFFSET the server takes, and the range of an execution id
# the runner parses (strconv.ParseInt(id, 10, 64)).
BIGINT_MAX = 2**63 - 1
# What stands in for a JSON value nested deeper than MAX_JSON_DEPTH (see decode_json).
UNREADABLE_JSON = f"(not shown: nested deeper than {MAX_JSON_DEPTH} levels)"
# Go's zero time.Time as encoding/json writes it: the runner's cross-region-diff items carry
# it for a NULL time (their time fields have no omitempty).
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
# The runner's region labels (runner-app.md section 3.3): its keys are the router's provider
# regions; any other region, such as the portal's "US", gets its own name upper-cased as its
# code, itself as its name, and the globe.
REGION_LABELS = {
    "us-east": ("US", "United States", "\U0001f1fa\U0001f1f8"),
    "eu-west": ("EU", "Europe", "\U0001f1ea\U0001f1fa"),
    "asia-pacific": ("ASIA", "Asia Pacific", "\U0001f30f"),
}
OTHER_REGION_FLAG = "\U0001f30d"


@functools.cache
def queries() -> Mapping[str, str]:
    """Return the reads of sql/queries/portal.sql as they run: each whole-row read with its
    columns (execution_columns) spliced in."""
    named = named_queries("queries/portal.sql")
    columns = named["execution_columns"]
    return {name: q.replace("{execution_columns}", columns) for name, q in named.items()}


@dataclass(frozen=True)
class ExecutionRow:
    """One row of ``executions_unified`` as the portal reads it (times naive UTC; JSON columns
    as their text, None for SQL NULL, so that JSON null is told apart)."""

    execution_id: int | None
    source: str
    jobspec_id: str | None
    status: str | None
    region: str
    provider_id: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime | None
    output_json: str | None
    receipt_json: str | None
    model_id: str | None
    question_id: str | None
    system_prompt: str | None
    response_classification: str | None
    is_substantive: bool | None
    is_content_refusal: bool | None
    response_length: int | None
    retry_count: int | None
    max_retries: int | None
    last_retry_at: datetime | None
    retry_history_json: str | None
    original_error: str | None
    evidence: int | None
    duration_ms: int | None


# A JSON string (skipped whole: brackets inside it are text) or a bracket, in text PostgreSQL
# wrote (jsonb::text is always valid JSON).
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def decode_json(text: str | None) -> Any:
    """Decode a JSON column's text as :func:`json.loads` does, at any depth; None for SQL NULL.

    Every value nested deeper than MAX_JSON_DEPTH levels (the writer's limit; Python's json
    gives up near 1000, and the encoders serve and the CLI answer with recurse as well) is
    replaced by the string UNREADABLE_JSON, its siblings and ancestors decoded as usual: a row
    written deeper by another writer still reads, with the marker where its depths were.
    """
    if text is None:
        return None
    # Fewer brackets than the limit bound the depth: the usual case, one C-speed pass.
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return json.loads(text)
    pieces: list[str] = []
    kept = 0  # text[:kept] is in pieces
    depth = 0
    cut: int | None = None  # where the value being cut opens
    for token in _JSON_TOKEN.finditer(text):
        mark = token.group()
        if mark in "[{":
            depth += 1
            if depth == MAX_JSON_DEPTH + 1:
                cut = token.start()
        elif mark in "]}":
            if depth == MAX_JSON_DEPTH + 1 and cut is not None:
                pieces += (text[kept:cut], json.dumps(UNREADABLE_JSON))
                kept = token.end()
                cut = None
            depth -= 1
    pieces.append(text[kept:])
    return json.loads("".join(pieces))


def _or(value: Any, default: Any) -> Any:
    """SQL COALESCE: the default replaces NULL only (not '' or false)."""
    return default if value is None else value


def _require_page(limit: int | None, offset: int) -> None:
    if limit is not None and not 0 <= limit <= BIGINT_MAX:
        raise InvalidArgumentError(f"limit must be within 0..{BIGINT_MAX}, got {limit}")
    if not 0 <= offset <= BIGINT_MAX:
        raise InvalidArgumentError(f"offset must be within 0..{BIGINT_MAX}, got {offset}")


def require_text(params: Mapping[str, Any]) -> None:
    """A text parameter with U+0000 names nothing: PostgreSQL text cannot hold it."""
    for name, value in params.items():
        if isinstance(value, str) and "\x00" in value:
            raise InvalidArgumentError(
                f"{name} contains U+0000 (NUL), which no PostgreSQL text can hold: "
                "no job, model or question has it"
            )


def _rows(
    conn: psycopg.Connection[Any], name: str, params: Mapping[str, Any]
) -> list[ExecutionRow]:
    require_text(params)
    db.adapt_to_pooler(conn)
    with conn.cursor(row_factory=class_row(ExecutionRow)) as cur:
        return cur.execute(queries()[name], params).fetchall()


def read_executions(
    conn: psycopg.Connection[Any],
    jobspec_id: str,
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[ExecutionRow]:
    """Return the job's rows of ``executions_unified``, newest first, optionally paged."""
    _require_page(limit, offset)
    return _rows(conn, "executions", {"jobspec_id": jobspec_id, "limit": limit, "offset": offset})


def _utc(value: datetime) -> datetime:
    """A time of the view (naive UTC) or an aware one, as an aware UTC time."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def rfc3339(value: datetime | None) -> str:
    """Format a time the way the runner's executions handler does: ``2025-10-12T17:00:03Z``,
    no fraction, ``""`` when NULL (runner-app.md section 3.1). A naive time is UTC."""
    if value is None:
        return ""
    # isoformat, not strftime: %Y writes year 1 as "1" where Go writes "0001"
    return _utc(value).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def go_time(value: datetime) -> str:
    """Format a time as Go's ``time.Time`` marshals to JSON (RFC 3339 with nanoseconds, trailing
    zeros dropped), in UTC. A naive time is UTC."""
    value = _utc(value).replace(tzinfo=None)
    text = value.isoformat(timespec="seconds")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _head_fields(row: ExecutionRow) -> dict[str, Any]:
    """The fields every executions item of the runner starts with (runner-app.md sections 3.1
    and 3.3), in order; ``job_id`` is ``""`` for a row of no job."""
    return {
        "id": row.execution_id,
        "job_id": _or(row.jobspec_id, ""),
        "status": row.status,
        "region": row.region,
        "provider_id": row.provider_id,
        "started_at": rfc3339(row.started_at),
        "completed_at": rfc3339(row.completed_at),
        "created_at": rfc3339(row.created_at),
    }


def execution_item(row: ExecutionRow) -> dict[str, Any]:
    """Return one item of ``/executions/all`` (runner-app.md section 3.1): the runner's
    COALESCE defaults (NULL only), and its fields omitted when empty."""
    item = {**_head_fields(row), "has_receipt": row.receipt_json is not None}
    if row.output_json is not None:
        item["output"] = decode_json(row.output_json)
    item["model_id"] = _or(row.model_id, DEFAULT_MODEL)
    if row.question_id:
        item["question_id"] = row.question_id
    if row.system_prompt:
        item["system_prompt"] = row.system_prompt
    item["response_classification"] = _or(row.response_classification, "unknown")
    item["is_substantive"] = _or(row.is_substantive, False)
    item["is_content_refusal"] = _or(row.is_content_refusal, False)
    if row.response_length:
        item["response_length"] = row.response_length
    item["retry_count"] = _or(row.retry_count, 0)
    item["max_retries"] = _or(row.max_retries, 3)
    if row.last_retry_at is not None:
        item["last_retry_at"] = go_time(row.last_retry_at)
    history = decode_json(row.retry_history_json)
    item["retry_history"] = [] if history is None else history
    if row.original_error is not None:
        item["original_error"] = row.original_error
    return item


def executions_all(conn: psycopg.Connection[Any], jobspec_id: str) -> dict[str, Any]:
    """Return ``GET /api/v1/jobs/{id}/executions/all``: ``{"executions": [item, ...]}``."""
    return {"executions": [execution_item(r) for r in read_executions(conn, jobspec_id)]}


def job_execution_item(row: ExecutionRow) -> dict[str, Any]:
    """Return one item of ``/jobs/{id}?include=executions`` (runner-app.md section 3.2)."""
    item: dict[str, Any] = {
        "id": row.execution_id,
        "region": row.region,
        "provider_id": row.provider_id,
        "status": row.status,
        "model_id": row.model_id,
        "question_id": row.question_id,
        "response_classification": row.response_classification,
        "is_substantive": row.is_substantive,
        "is_content_refusal": row.is_content_refusal,
    }
    if row.started_at is not None:
        item["started_at"] = go_time(row.started_at)
    if row.completed_at is not None:
        item["completed_at"] = go_time(row.completed_at)
    if row.receipt_json is not None:
        item["receipt"] = decode_json(row.receipt_json)
    return item


def job_with_executions(
    conn: psycopg.Connection[Any],
    jobspec_id: str,
    *,
    limit: int = PAGE_LIMIT_DEFAULT,
    offset: int = 0,
) -> dict[str, Any]:
    """Return ``GET /api/v1/jobs/{id}?include=executions``: ``{"job": <JobSpec with created_at
    from jobs.created_at>, "status": <jobs.status>, "executions": [...]}``; ``job`` and
    ``status`` are null for an unknown job. *limit* is 1..200 (runner-app.md section 3.2)."""
    if not 1 <= limit <= PAGE_LIMIT_MAX:
        raise InvalidArgumentError(f"limit must be within 1..{PAGE_LIMIT_MAX}, got {limit}")
    require_text({"jobspec_id": jobspec_id})
    db.adapt_to_pooler(conn)
    job = conn.execute(queries()["job"], {"jobspec_id": jobspec_id}).fetchone()
    spec: dict[str, Any] | None = None
    status = None
    if job is not None:
        data = decode_json(job[2])
        spec = dict(data) if isinstance(data, dict) else {"raw": data}
        if job[4] is not None:
            spec["created_at"] = go_time(job[4])
        status = job[3]
    rows = read_executions(conn, jobspec_id, limit=limit, offset=offset)
    return {"job": spec, "status": status, "executions": [job_execution_item(r) for r in rows]}


# --------------------------------------------------------------------------------------------
# GET /api/v1/executions and the reads of one execution
# --------------------------------------------------------------------------------------------


def list_item(row: ExecutionRow) -> dict[str, Any]:
    """Return one item of ``GET /api/v1/executions`` (runner-app.md section 3.3): id, job_id,
    status, region, provider_id, the three times as in ``/executions/all``, ``receipt_id`` (the
    receipt's ``id`` when it is a string, else ``""``), ``output`` (omitted when NULL) and
    ``model_id`` (``llama3.2-1b`` when NULL).

    A row of no job (a direct row without ``job_id``) has ``"job_id": ""``, Go's empty string,
    as the runner gives for a NULL time: the runner's JOIN on jobs leaves such a row out, but
    the list's total counts every row the view shows, so the list shows them too.
    """
    receipt = decode_json(row.receipt_json)
    receipt_id = receipt.get("id") if isinstance(receipt, dict) else None
    item = {
        **_head_fields(row),
        "receipt_id": receipt_id if isinstance(receipt_id, str) else "",
    }
    if row.output_json is not None:
        item["output"] = decode_json(row.output_json)
    item["model_id"] = _or(row.model_id, DEFAULT_MODEL)
    return item


def executions_list(
    conn: psycopg.Connection[Any], *, limit: int = PAGE_LIMIT_DEFAULT, offset: int = 0
) -> dict[str, Any]:
    """Return ``GET /api/v1/executions``: ``{"executions": [item, ...], "limit", "offset",
    "total"}``, the runner's envelope, newest first across every job (the order of
    ``/executions/all``); *total* is how many rows the view shows.

    *limit* is 1..200 (default 20) and *offset* 0..2^63-1, as ``?include=executions`` takes
    them (SPEC "Serving it"; runner-app.md gives this list no bounds of its own); an empty page
    is ``[]``, not the runner's ``null``. Raises InvalidArgumentError outside those bounds.
    """
    if not 1 <= limit <= PAGE_LIMIT_MAX:
        raise InvalidArgumentError(f"limit must be within 1..{PAGE_LIMIT_MAX}, got {limit}")
    _require_page(limit, offset)
    with whole_view_reads(conn):
        rows = _page(conn, limit, offset)
        total = conn.execute(queries()["executions_count"]).fetchone()
    return {
        "executions": [list_item(r) for r in rows],
        "limit": limit,
        "offset": offset,
        "total": int(total[0]) if total else 0,
    }


@contextmanager
def whole_view_reads(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Run reads of the whole view in one transaction without JIT compilation: for a plan that
    large, compiling costs more than the read (1.4 s of a 2.1 s list read, 50k jobs, 2 cores)."""
    db.adapt_to_pooler(conn)
    with conn.transaction():
        conn.execute("SELECT set_config('jit', 'off', true)")
        yield


# executions_page's window: tried from the newest jobs' creation on, widened WINDOW_GROWTH-fold
# at most WINDOW_TRIES times, then unbounded.
WINDOW_GROWTH = 16
WINDOW_TRIES = 3


def _page(conn: psycopg.Connection[Any], limit: int, offset: int) -> list[ExecutionRow]:
    """Return the view's rows offset..offset+limit, newest first. The stored ones are read from
    a window in time on, through the view's created_at index: from the creation of the newest
    jobs, as many as the page's end, widened while the window holds fewer stored rows than
    that, and unbounded at last (sql/queries/portal.sql, executions_page)."""
    end = limit + offset
    jobs = end
    since = datetime.min.replace(tzinfo=UTC)  # no bound
    for _ in range(WINDOW_TRIES):
        row = conn.execute(queries()["executions_page_since"], {"jobs": jobs}).fetchone()
        if row is None:
            break  # fewer jobs than that: the window is everything
        start = row[0]
        held = conn.execute(queries()["executions_in_window"], {"since": start, "end": end})
        if held.fetchone() == (end,):
            since = start
            break
        jobs *= WINDOW_GROWTH
    return _rows(conn, "executions_page", {"since": since, "limit": limit, "offset": offset})


# What the runner's strconv.ParseInt(id, 10, 64) takes: an optional sign, ASCII decimal digits.
_EXECUTION_ID = re.compile(r"[+-]?[0-9]+")


def parse_execution_id(text: str) -> int:
    """Parse an execution id as the runner does (a 64-bit decimal integer: no spaces,
    underscores or other digits than 0-9); raise InvalidArgumentError (the runner's 400,
    "Invalid execution ID") otherwise."""
    value = int(text, 10) if _EXECUTION_ID.fullmatch(text) else None
    if value is None or not -BIGINT_MAX - 1 <= value <= BIGINT_MAX:
        raise InvalidArgumentError(f"invalid execution id {text[:40]!r}: a 64-bit integer")
    return value


def _require_execution_id(execution_id: int) -> None:
    if (
        isinstance(execution_id, bool)
        or not isinstance(execution_id, int)
        or not -BIGINT_MAX - 1 <= execution_id <= BIGINT_MAX
    ):
        raise InvalidArgumentError(
            f"an execution id is an integer within -2^63..2^63-1, got {execution_id!r}"
        )


def _not_shown(execution_id: int) -> NotFoundError:
    return NotFoundError(
        f"no execution {execution_id}: executions_unified shows no row with that id (unknown, "
        "or a duplicate the view hides behind a better row of its key). "
        "`beaconsql executions --all` lists the ids there are."
    )


def read_execution(conn: psycopg.Connection[Any], execution_id: int) -> ExecutionRow:
    """Return the row ``executions_unified`` shows with *execution_id*.

    Raises NotFoundError when it shows none: the id is unknown, or its row is hidden by a
    better candidate of its key (a legacy duplicate); InvalidArgumentError when the id is not
    an integer the runner could parse (64 bits).
    """
    _require_execution_id(execution_id)
    rows = _rows(conn, "execution", {"execution_id": execution_id})
    if not rows:
        raise _not_shown(execution_id)
    return rows[0]


def details_item(row: ExecutionRow) -> dict[str, Any]:
    """Return ``GET /api/v1/executions/{id}/details`` for *row* (runner-app.md section 3.3):
    id, job_id (``""`` for a row of no job, as in :func:`list_item`), status, region,
    provider_id, the three times as in ``/executions/all``, and ``output`` and ``receipt``,
    always present, null when NULL."""
    return {
        **_head_fields(row),
        "output": decode_json(row.output_json),
        "receipt": decode_json(row.receipt_json),
    }


def execution_details(conn: psycopg.Connection[Any], execution_id: int) -> dict[str, Any]:
    """Return ``GET /api/v1/executions/{id}/details`` (see :func:`details_item`).

    Raises NotFoundError for an id the view does not show (:func:`read_execution`).
    """
    return details_item(read_execution(conn, execution_id))


def _one_value(
    conn: psycopg.Connection[Any], name: str, execution_id: int
) -> tuple[bool, str | None]:
    """Run an id-scoped query of one column: (whether the view shows the id, the value)."""
    _require_execution_id(execution_id)
    db.adapt_to_pooler(conn)
    row = conn.execute(queries()[name], {"execution_id": execution_id}).fetchone()
    return (row is not None, None if row is None else row[0])


def execution_receipt(conn: psycopg.Connection[Any], execution_id: int) -> Any:
    """Return ``GET /api/v1/executions/{id}/receipt``: the row's receipt_data as it is (the
    shape of runner-app.md section 5), with no envelope.

    Raises NotFoundError when the view shows no row with that id, or its row has no receipt
    (the runner stores none for a failed pair, and a legacy region result holds none). The
    runner answers 500 for a receipt that is JSON but not an object (it decodes into a map);
    this returns it as it is.
    """
    shown, text = _one_value(conn, "execution_receipt", execution_id)
    if not shown:
        raise _not_shown(execution_id)
    if text is None:
        raise NotFoundError(
            f"execution {execution_id} has no receipt (the runner stores none for a failed "
            "pair, and a region result in its legacy format holds none); `beaconsql execution "
            "ID` shows its output and error."
        )
    return decode_json(text)


def execution_bias_score(
    conn: psycopg.Connection[Any], execution_id: int, *, now: datetime | None = None
) -> dict[str, Any]:
    """Return ``GET /api/v1/executions/{id}/bias-score``: ``{"execution_id", "bias_metrics":
    output_data's bias_score, "retrieved_at": when it was read (RFC 3339, UTC, like the
    runner's other times)}``, the runner handler's envelope.

    Raises NotFoundError when the view shows no row with that id, or its output holds no
    ``bias_score`` (no scorer was configured when it ran). The runner answers 500 for a
    bias_score that is not an object; this returns it as it is.
    """
    shown, text = _one_value(conn, "execution_bias_score", execution_id)
    if not shown:
        raise _not_shown(execution_id)
    if text is None:
        raise NotFoundError(
            f"execution {execution_id} has no bias score (its output holds no bias_score: no "
            "scorer was configured when it ran)."
        )
    return {
        "execution_id": execution_id,
        "bias_metrics": decode_json(text),
        "retrieved_at": rfc3339(now or datetime.now(UTC)),
    }


# --------------------------------------------------------------------------------------------
# Cross-region reads of one job, and the diffs list
# --------------------------------------------------------------------------------------------


def region_label(region: str) -> tuple[str, str, str]:
    """Return the runner's (region_code, region_name, flag) of *region* (REGION_LABELS)."""
    return REGION_LABELS.get(region) or (region.upper(), region, OTHER_REGION_FLAG)


def cross_region_executions(
    conn: psycopg.Connection[Any],
    jobspec_id: str,
    *,
    model_id: str,
    question_id: str | None = None,
) -> dict[str, Any]:
    """Return ``GET /api/v1/executions/{jobId}/cross-region?model_id=&question_id=``.

    The newest row per region of the job and model (and question, when given; without one,
    every question's rows compete, as the runner does for callers that predate question ids),
    in the runner's envelope (runner-app.md section 3.3; its cross-region handler)::

        {"cross_region_execution": {"job_id", "model_id", "created_at", "status"},
         "region_results": [{"region", "region_code", "region_name", "flag", "status",
                             "provider_id", "execution_id", "started_at", "completed_at",
                             "duration_ms", "execution_output", "scoring", "error"}, ...],
         "summary": {"total_regions", "completed_regions", "failed_regions",
                     "avg_response_length"}}

    Regions in order; times as Go marshals them (``completed_at`` and ``duration_ms`` only
    when completed_at is set; ``started_at`` null where the runner would fail the whole read);
    ``duration_ms`` is the view's. ``execution_output`` is the output of a completed row when
    it is an object; ``scoring`` of a completed row is ``{"censorship_detected":
    is_content_refusal}``; ``error`` of a failed or cancelled row is its original_error, else
    the runner's ``"Execution failed"``. ``created_at`` is that of the first row (null when
    none); ``status`` is ``completed``, ``partial`` (some regions failed) or ``failed`` (all
    did), as the runner's, or ``running`` while a region is still pending or running, or
    ``pending`` without rows: the runner counts every row not completed as failed, because its
    executions rows were all finished ones, while the view also shows the pairs still to come.
    ``avg_response_length`` is the mean byte length of the completed answers (Go's ``len``,
    integer division).

    Left out: the runner's ``analysis`` and its ``scoring``/``summary`` numbers that are
    constants (bias score 0.15, factual accuracy 0.92, ...), and what it derives from them
    (variance, risk level). A job without rows for the model gives ``"region_results": []``
    (the runner answers 404; an unknown job is the route's 404). Raises InvalidArgumentError
    when *model_id* is empty, as the runner's 400.
    """
    if not model_id:
        raise InvalidArgumentError("model_id query parameter is required")
    params = {"jobspec_id": jobspec_id, "model_id": model_id, "question_id": question_id}
    rows = _rows(conn, "cross_region_by_question" if question_id else "cross_region", params)
    results: list[dict[str, Any]] = []
    completed = failed = unfinished = 0
    lengths: list[int] = []
    for row in rows:
        code, name, flag = region_label(row.region)
        result: dict[str, Any] = {
            "region": row.region,
            "region_code": code,
            "region_name": name,
            "flag": flag,
            "status": row.status,
            "provider_id": row.provider_id,
            "execution_id": row.execution_id,
            "started_at": None if row.started_at is None else go_time(row.started_at),
        }
        if row.completed_at is not None:
            result["completed_at"] = go_time(row.completed_at)
            if row.duration_ms is not None:
                result["duration_ms"] = row.duration_ms
        if row.status == "completed":
            completed += 1
            output = decode_json(row.output_json)
            if isinstance(output, dict):
                result["execution_output"] = output
                if isinstance(output.get("response"), str):
                    lengths.append(len(output["response"].encode()))
            result["scoring"] = {"censorship_detected": bool(row.is_content_refusal)}
        elif row.status in ("pending", "running"):
            unfinished += 1
        else:
            failed += 1
            result["error"] = row.original_error or "Execution failed"
        results.append(result)
    if not results:
        status = "pending"
    elif unfinished:
        status = "running"
    elif failed and not completed:
        status = "failed"
    elif failed:
        status = "partial"
    else:
        status = "completed"
    first = rows[0].created_at if rows else None
    return {
        "cross_region_execution": {
            "job_id": jobspec_id,
            "model_id": model_id,
            "created_at": None if first is None else go_time(first),
            "status": status,
        },
        "region_results": results,
        "summary": {
            "total_regions": len(results),
            "completed_regions": completed,
            "failed_regions": failed,
            "avg_response_length": sum(lengths) // len(lengths) if lengths else 0,
        },
    }


def diff_item(row: ExecutionRow) -> dict[str, Any]:
    """Return one item of ``/executions/{jobId}/cross-region-diff``: the runner's item type
    (id, region, provider_id, status, started_at, completed_at, output_data, then model_id,
    system_prompt, response_classification, is_substantive, is_content_refusal and
    response_length, each omitted when empty as Go's omitempty does). Times as Go marshals
    them, Go's zero time when NULL, as the runner's item (no omitempty there); output_data
    null when NULL. The runner's query leaves the omitempty fields unselected, so they never
    show there; they are the row's here, as its item type means them to be."""
    item: dict[str, Any] = {
        "id": row.execution_id,
        "region": row.region,
        "provider_id": row.provider_id,
        "status": row.status,
        "started_at": GO_ZERO_TIME if row.started_at is None else go_time(row.started_at),
        "completed_at": GO_ZERO_TIME if row.completed_at is None else go_time(row.completed_at),
        "output_data": decode_json(row.output_json),
    }
    for key, value in (
        ("model_id", row.model_id),
        ("system_prompt", row.system_prompt),
        ("response_classification", row.response_classification),
        ("is_substantive", row.is_substantive),
        ("is_content_refusal", row.is_content_refusal),
        ("response_length", row.response_length),
    ):
        if value:
            item[key] = value
    return item


def cross_region_diff(
    conn: psycopg.Connection[Any], jobspec_id: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """Return ``GET /api/v1/executions/{jobId}/cross-region-diff``: ``{"job_id",
    "total_regions", "executions": [item, ...], "generated_at"}``, the runner handler's
    envelope, with every completed row of the job by region, newest first within one
    (runner-app.md section 3.3; items: :func:`diff_item`).

    ``total_regions`` counts the distinct regions of those rows; ``generated_at`` is when it
    was read (RFC 3339, UTC). An unknown job or one without completed rows gives ``[]`` (the
    runner: ``null``). The runner's ``analysis`` (refusal phrases matched in the answers,
    length and sensitivity thresholds, a constant factual consistency) is left out: it is a
    heuristic of its handler, not a read; its inputs, the answers and their ``bias_score``,
    are in ``output_data``.
    """
    rows = _rows(conn, "cross_region_diff", {"jobspec_id": jobspec_id})
    return {
        "job_id": jobspec_id,
        "total_regions": len({row.region for row in rows}),
        "executions": [diff_item(row) for row in rows],
        "generated_at": rfc3339(now or datetime.now(UTC)),
    }


def diffs(conn: psycopg.Connection[Any], *, limit: int = PAGE_LIMIT_DEFAULT) -> dict[str, Any]:
    """Return ``GET /api/v1/diffs``: ``{"diffs": [item, ...], "limit", "total"}``, the runner's
    envelope, one item per job whose completed rows span two regions or more, newest job first
    (by jobs.created_at; a run without a jobs row last).

    Items: ``{"id", "job_id"`` (both the jobspec id), ``"regions"``, ``"analysis_type":
    "cross_region_bias", "status": "completed", "created_at"`` (jobs.created_at as in
    ``/executions/all``, ``""`` when there is none), ``"view_url":
    "/executions/<id>/cross-region-diff"}``, as the runner's route gives them. Deliberate
    fixes: ``regions`` is the number of distinct regions (the runner counts completed rows
    under the name region_count); ``limit`` is the number used (the runner echoes the query's
    text); ``total``, as the runner's, is the number of items returned. *limit* is 1..200,
    default 20 (the SPEC's clamps; the runner takes any text, default 10).
    """
    if not 1 <= limit <= PAGE_LIMIT_MAX:
        raise InvalidArgumentError(f"limit must be within 1..{PAGE_LIMIT_MAX}, got {limit}")
    with whole_view_reads(conn):
        rows = conn.execute(queries()["diffs"], {"limit": limit}).fetchall()
    items = [
        {
            "id": jobspec_id,
            "job_id": jobspec_id,
            "regions": int(regions),
            "analysis_type": "cross_region_bias",
            "status": "completed",
            "created_at": rfc3339(created_at),
            "view_url": f"/executions/{jobspec_id}/cross-region-diff",
        }
        for jobspec_id, regions, created_at in rows
    ]
    return {"diffs": items, "limit": limit, "total": len(items)}


@dataclass(frozen=True)
class Tally:
    """Counts of one slice of a job (overall, a region, a model or a question)."""

    expected: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> int:
        """completed + failed + cancelled."""
        return sum(self.counts.get(s, 0) for s in FINISHED)

    @property
    def percent_done(self) -> float:
        return round(100.0 * self.done / self.expected, 1) if self.expected else 0.0

    @property
    def percent_completed(self) -> float:
        completed = self.counts.get("completed", 0)
        return round(100.0 * completed / self.expected, 1) if self.expected else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "counts": {s: self.counts.get(s, 0) for s in STATUSES},
            "done": self.done,
            "percent_done": self.percent_done,
            "percent_completed": self.percent_completed,
        }


@dataclass(frozen=True)
class Progress:
    """A job's progress (SPEC "Portal reads"): dimensions, the grid of statuses, tallies."""

    jobspec_id: str
    job_status: str | None
    regions: list[str]
    models: list[str]
    questions: list[str]
    grid: list[tuple[str, str, str, str]]
    overall: Tally
    by_region: dict[str, Tally]
    by_model: dict[str, Tally]
    by_question: dict[str, Tally]

    def to_dict(self) -> dict[str, Any]:
        return {
            "jobspec_id": self.jobspec_id,
            "job_status": self.job_status,
            "regions": self.regions,
            "models": self.models,
            "questions": self.questions,
            **self.overall.to_dict(),
            "by_region": {k: v.to_dict() for k, v in self.by_region.items()},
            "by_model": {k: v.to_dict() for k, v in self.by_model.items()},
            "by_question": {k: v.to_dict() for k, v in self.by_question.items()},
            "grid": [
                {"region": r, "model_id": m, "question_id": q, "status": s}
                for r, m, q, s in self.grid
            ],
        }


def _ordered(first: Sequence[str], seen: Iterable[str]) -> list[str]:
    out = list(first)
    for value in seen:
        if value not in out:
            out.append(value)
    return out


def _tallies(
    names: list[str], key: int, grid: list[tuple[str, str, str, str]], expected_each: int
) -> dict[str, Tally]:
    out = {}
    for name in names:
        statuses = Counter(row[3] for row in grid if row[key] == name)
        out[name] = Tally(
            expected=max(expected_each, sum(statuses.values())), counts=dict(statuses)
        )
    return out


def progress(conn: psycopg.Connection[Any], jobspec_id: str) -> Progress:
    """Return the job's progress.

    regions = ``constraints.regions``, else the distinct regions of the job's rows; models =
    models(J) and questions = questions(J), as the mirror rule reads them; expected = regions ×
    models × questions, never less than the rows shown; done = completed + failed + cancelled.
    An unknown job gives an empty progress (expected 0).
    """
    require_text({"jobspec_id": jobspec_id})
    db.adapt_to_pooler(conn)
    job = conn.execute(queries()["job"], {"jobspec_id": jobspec_id}).fetchone()
    dims = conn.execute(queries()["progress_dimensions"], {"jobspec_id": jobspec_id}).fetchone()
    rows = conn.execute(queries()["progress_rows"], {"jobspec_id": jobspec_id}).fetchall()
    grid = sorted((str(r), str(m or DEFAULT_MODEL), str(q or ""), str(s)) for r, m, q, s in rows)
    spec_regions, models, questions = list(dims) if dims else ([], [], [])
    regions = _ordered(spec_regions, (row[0] for row in grid))
    models = _ordered(models, (row[1] for row in grid))
    questions = _ordered(questions, (row[2] for row in grid))
    n_regions = len(spec_regions) or len({row[0] for row in grid})
    n_models = len(dims[1]) if dims else 0
    n_questions = len(dims[2]) if dims else 0
    expected = max(n_regions * n_models * n_questions, len(grid))
    return Progress(
        jobspec_id=jobspec_id,
        job_status=None if job is None else job[3],
        regions=regions,
        models=models,
        questions=questions,
        grid=grid,
        overall=Tally(expected=expected, counts=dict(Counter(row[3] for row in grid))),
        by_region=_tallies(regions, 0, grid, n_models * n_questions),
        by_model=_tallies(models, 1, grid, n_regions * n_questions),
        by_question=_tallies(questions, 2, grid, n_regions * n_models),
    )
