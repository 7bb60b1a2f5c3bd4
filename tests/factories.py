"""Factories for raw runner-format rows, written with plain INSERTs (no writer, no mirror
helper): ``make_<thing>(conn, **overrides)`` inserts one row with sensible defaults, every
column overridable, and returns the inserted row as a dict (``RETURNING *``).

Shapes follow shared/reference/runner-app.md: jobs (section 2.1, spec of section 4),
cross_region_executions (2.1), region_results (2.4, 5) and direct executions rows (2.3).
Values for jsonb columns may be any JSON value (dict, list, str, number, None); they are
wrapped with :class:`psycopg.types.json.Jsonb` (``None`` stays SQL NULL).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from beaconsql import seed

# A region's start in the factories' rows, timezone-aware (region_results holds timestamptz).
STARTED_AT = datetime(2025, 10, 12, 17, 0, 0, tzinfo=UTC)

_JSONB = {
    "jobs": {"jobspec_data"},
    "cross_region_executions": set(),
    "region_results": {"provider_info", "execution_output", "scoring", "metadata"},
    "executions": {"output_data", "receipt_data", "retry_history"},
}


def unique_jobspec_id(prefix: str = "bias-detection") -> str:
    """Return a jobspec id no other factory call returns."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _insert(conn: psycopg.Connection[Any], table: str, values: dict[str, Any]) -> dict[str, Any]:
    cols = list(values)
    params = [
        Jsonb(values[c]) if c in _JSONB[table] and values[c] is not None else values[c]
        for c in cols
    ]
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING *").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        sql.SQL(", ").join(sql.Placeholder() for _ in cols),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, params).fetchone()
    assert row is not None
    return row


def make_job(conn: psycopg.Connection[Any], **overrides: Any) -> dict[str, Any]:
    """Insert a jobs row as the runner's CreateJob does. Defaults: a fresh jobspec_id, the
    portal's spec (seed.jobspec) for it with regions US and EU, the worked example's 3 models
    and 3 questions; ``spec`` may be given instead of ``jobspec_data`` (its ``id`` is then
    kept in step with ``jobspec_id``)."""
    jobspec_id = overrides.pop("jobspec_id", None) or unique_jobspec_id()
    spec = overrides.pop("spec", None)
    data = overrides.pop("jobspec_data", None)
    if data is None:
        data = dict(spec, id=jobspec_id) if spec is not None else seed.jobspec(jobspec_id)
    values: dict[str, Any] = {
        "jobspec_id": jobspec_id,
        "jobspec_data": data,
        "status": "queued",
        "created_at": STARTED_AT.replace(tzinfo=None),
        "updated_at": STARTED_AT.replace(tzinfo=None),
    }
    values.update(overrides)
    return _insert(conn, "jobs", values)


def make_run(conn: psycopg.Connection[Any], **overrides: Any) -> dict[str, Any]:
    """Insert a cross_region_executions row (status running). Default jobspec_id: a fresh one
    with no jobs row (pass ``jobspec_id=job["jobspec_id"]`` to attach it to a job)."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "jobspec_id": unique_jobspec_id(),
        "total_regions": 2,
        "min_regions_required": 1,
        "min_success_rate": 0.67,
        "status": "running",
        "started_at": STARTED_AT,
    }
    values.update(overrides)
    return _insert(conn, "cross_region_executions", values)


def make_region_result(conn: psycopg.Connection[Any], **overrides: Any) -> dict[str, Any]:
    """Insert a region_results row as the runner's first INSERT does (status running, region
    US, provider modal-us-east). Default run: a fresh one (``make_run``) with no job."""
    if "cross_region_execution_id" not in overrides:
        overrides["cross_region_execution_id"] = make_run(conn)["id"]
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "region": "US",
        "provider_id": "modal-us-east",
        "status": "running",
        "started_at": STARTED_AT,
    }
    values.update(overrides)
    return _insert(conn, "region_results", values)


def make_direct_execution(conn: psycopg.Connection[Any], **overrides: Any) -> dict[str, Any]:
    """Insert a direct executions row as the runner's callback does (section 2.3): region US,
    provider modal-us-east, completed, started_at = the region's start, created_at =
    started_at, an answer in output_data, cross_region_execution_id NULL. ``job_id`` is
    required unless given as None explicitly."""
    if "job_id" not in overrides:
        raise TypeError("make_direct_execution needs job_id (None for a row without a job)")
    region = overrides.get("region", "US")
    model_id = overrides.get("model_id", "llama3.2-1b")
    question_id = overrides.get("question_id", "greatest_invention")
    started = overrides.get("started_at", STARTED_AT.replace(tzinfo=None))
    values: dict[str, Any] = {
        "provider_id": seed.PROVIDERS.get(region, ""),
        "region": region,
        "status": "completed",
        "started_at": started,
        "completed_at": started + timedelta(seconds=5),
        "created_at": started,
        "output_data": seed.answer(model_id, question_id, region),
        "model_id": model_id,
        "question_id": question_id,
    }
    values.update(overrides)
    return _insert(conn, "executions", values)


def element(
    model_id: str, question_id: str, status: str | None = "completed", **fields: Any
) -> dict[str, Any]:
    """Return one per-pair result element of execution_output.executions (the writer's
    format), completed with an answer by default; ``fields`` override or add keys."""
    el: dict[str, Any] = {
        "model_id": model_id,
        "question_id": question_id,
        "status": status,
        "started_at": "2025-10-12T17:00:00Z",
        "completed_at": "2025-10-12T17:00:03Z",
        "output": {"response": f"answer {model_id}/{question_id}"},
        "receipt": {"id": f"receipt-{model_id}-{question_id}"},
        "error": None,
    }
    el.update(fields)
    return el
