"""The portal's reads, against ``executions_unified`` (plus ``jobs`` for the spec), shaped as
the runner's API returns them (SPEC "Portal reads"; runner-app.md section 3).

- :func:`executions_all`: ``GET /api/v1/jobs/{id}/executions/all`` → ``{"executions": [...]}``;
  an unknown job or a job without rows gives ``[]`` (the runner's ``null`` broke its portal).
- :func:`job_with_executions`: ``GET /api/v1/jobs/{id}?include=executions`` → ``{"job", "status",
  "executions"}``, paged with limit/offset (default 20, at most 200, as the runner).
- :func:`progress`: what the portal's Live Progress shows, per region, model and question.

Rows the view derives for a region result that is not mirrored yet have ``"id": null``.
Directly, psycopg's prepared statements make a repeated read several times faster (planning
the view is most of its cost); through a pooler they are turned off
(:func:`beaconsql.db.adapt_to_pooler`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from beaconsql import db
from beaconsql.errors import InvalidArgumentError
from beaconsql.sqlfiles import named_queries

DEFAULT_MODEL = "llama3.2-1b"
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")
PAGE_LIMIT_DEFAULT = 20
PAGE_LIMIT_MAX = 200


def _queries() -> Mapping[str, Any]:
    return named_queries("queries/portal.sql")


@dataclass(frozen=True)
class ExecutionRow:
    """One row of ``executions_unified`` as the portal reads it (times are aware, UTC; JSON
    columns as their text, None for SQL NULL, so that JSON null is told apart)."""

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


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _or(value: Any, default: Any) -> Any:
    """SQL COALESCE: the default replaces NULL only (not '' or false)."""
    return default if value is None else value


def read_executions(
    conn: psycopg.Connection[Any],
    jobspec_id: str,
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[ExecutionRow]:
    """Return the job's rows of ``executions_unified``, newest first, optionally paged."""
    if limit is not None and limit < 0:
        raise InvalidArgumentError(f"limit must be >= 0, got {limit}")
    if offset < 0:
        raise InvalidArgumentError(f"offset must be >= 0, got {offset}")
    db.adapt_to_pooler(conn)
    with conn.cursor(row_factory=class_row(ExecutionRow)) as cur:
        return cur.execute(
            _queries()["executions"], {"jobspec_id": jobspec_id, "limit": limit, "offset": offset}
        ).fetchall()


def rfc3339(value: datetime | None) -> str:
    """Format a time the way the runner's executions handler does: ``2025-10-12T17:00:03Z``,
    no fraction, ``""`` when NULL (runner-app.md section 3.1)."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_time(value: datetime) -> str:
    """Format a time as Go's ``time.Time`` marshals to JSON (RFC 3339 with nanoseconds, trailing
    zeros dropped), in UTC."""
    text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def execution_item(row: ExecutionRow) -> dict[str, Any]:
    """Return one item of ``/executions/all`` (runner-app.md section 3.1): the runner's
    COALESCE defaults (NULL only), and its fields omitted when empty."""
    item: dict[str, Any] = {
        "id": row.execution_id,
        "job_id": row.jobspec_id,
        "status": row.status,
        "region": row.region,
        "provider_id": row.provider_id,
        "started_at": rfc3339(row.started_at),
        "completed_at": rfc3339(row.completed_at),
        "created_at": rfc3339(row.created_at),
        "has_receipt": row.receipt_json is not None,
    }
    if row.output_json is not None:
        item["output"] = _json(row.output_json)
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
    item["retry_history"] = [] if row.retry_history_json is None else _json(row.retry_history_json)
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
        item["receipt"] = _json(row.receipt_json)
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
    db.adapt_to_pooler(conn)
    job = conn.execute(_queries()["job"], {"jobspec_id": jobspec_id}).fetchone()
    spec: dict[str, Any] | None = None
    status = None
    if job is not None:
        spec = dict(job[2]) if isinstance(job[2], dict) else {"raw": job[2]}
        if job[4] is not None:
            spec["created_at"] = go_time(job[4].replace(tzinfo=UTC))
        status = job[3]
    rows = read_executions(conn, jobspec_id, limit=limit, offset=offset)
    return {"job": spec, "status": status, "executions": [job_execution_item(r) for r in rows]}


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
    db.adapt_to_pooler(conn)
    job = conn.execute(_queries()["job"], {"jobspec_id": jobspec_id}).fetchone()
    dims = conn.execute(_queries()["progress_dimensions"], {"jobspec_id": jobspec_id}).fetchone()
    rows = conn.execute(_queries()["progress_rows"], {"jobspec_id": jobspec_id}).fetchall()
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
