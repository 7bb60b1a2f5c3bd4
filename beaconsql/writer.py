"""Record a run the way the runner does, into ``jobs``, ``cross_region_executions`` and
``region_results`` only: the mirror triggers derive ``executions`` (SPEC "The writer").

The caller owns the transaction: every function takes an open psycopg connection, runs its
statements on it and commits nothing. A default psycopg connection works directly and through
a transaction pooler (PgBouncer): there, psycopg's automatic prepared statements are turned off
on it (:func:`beaconsql.db.adapt_to_pooler`). Arguments are checked first; a bad one raises
:class:`~beaconsql.errors.InvalidArgumentError` before anything is written.

Typical use, one region of the worked example::

    job_id = writer.create_job(conn, jobspec)
    run_id = writer.start_run(conn, jobspec["id"], regions=["US", "EU"])
    region_id = writer.start_region(conn, run_id, "US", provider_id="modal-us-east")
    writer.record_pair(conn, region_id, model_id="llama3.2-1b", question_id="taiwan_status",
                       status="completed", started_at=t0, completed_at=t1,
                       output={"response": "..."}, receipt={"id": "receipt-..."})
    writer.finish_region(conn, region_id, completed_at=t2)
    writer.finish_run(conn, run_id, completed_at=t3)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from beaconsql import db
from beaconsql.errors import InvalidArgumentError, NotMigratedError
from beaconsql.sqlfiles import named_queries

# runner-app.md section 1.2 (0004): chk_jobs_status and chk_executions_status.
JOB_STATUSES = ("created", "queued", "running", "completed", "failed", "cancelled")
PAIR_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
FINISHED_PAIR_STATUSES = ("completed", "failed", "cancelled")
# Region statuses the runner writes (section 2.4), plus cancelled for a cancelled region.
REGION_STATUSES = ("success", "failed", "timeout", "cancelled")
# Column sizes of the runner's schema (sections 1.2-1.4).
MAX_MODEL_ID = 50
MAX_QUESTION_ID = 255
MAX_REGION = 100
MAX_PROVIDER_ID = 255
MAX_JOBSPEC_ID = 255
# How deep a JSON value the writer stores may nest: Python's json module, which the portal's
# readers decode with, gives up near 1000 levels; no runner payload comes near this.
MAX_JSON_DEPTH = 500


def _queries() -> Mapping[str, Any]:
    return named_queries("queries/writer.sql")


def _execute(
    conn: psycopg.Connection[Any], name: str, params: Mapping[str, Any]
) -> psycopg.Cursor[Any]:
    """Run the named query on the caller's connection (prepared statements off behind a pooler)."""
    db.adapt_to_pooler(conn)
    return conn.execute(_queries()[name], params)


@dataclass(frozen=True)
class RegionSummary:
    """What :func:`finish_region` wrote: the region's status and its pair counts."""

    status: str
    success_count: int
    failure_count: int
    total_executions: int


@dataclass(frozen=True)
class RunSummary:
    """What :func:`finish_run` wrote: the run's overall status and its region counts."""

    status: str
    success_count: int
    failure_count: int


def _require_storable_text(name: str, value: str) -> str:
    """Refuse text PostgreSQL cannot store (SPEC "Values a client cannot read"): U+0000, and
    lone surrogates, which are not UTF-8."""
    if "\x00" in value:
        raise InvalidArgumentError(
            f"{name} contains the character U+0000, which PostgreSQL cannot store in text or "
            "jsonb; remove it (nothing was written)"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            f"{name} contains a lone surrogate (not valid UTF-8), which PostgreSQL cannot "
            "store; decode its source correctly (nothing was written)"
        ) from None
    return value


def _require_text(name: str, value: object, max_length: int) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{name} must be a non-empty string, got {value!r}")
    if len(value) > max_length:
        raise InvalidArgumentError(
            f"{name} is {len(value)} characters; the runner's column holds at most {max_length}"
        )
    return _require_storable_text(name, value)


def _require_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def _require_time(name: str, value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError(
            f"{name} must be a timezone-aware datetime (e.g. datetime.now(UTC)); got {value!r}"
        )
    return value


def _require_uuid(name: str, value: object) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidArgumentError(f"{name} must be a UUID, got {value!r}") from None


def _require_json(name: str, value: object) -> object:
    """Refuse what jsonb cannot hold or a reader could not decode: values JSON has no form for
    (NaN, sets...), text PostgreSQL cannot store, nesting deeper than MAX_JSON_DEPTH."""
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidArgumentError(
                f"{name} nests deeper than {MAX_JSON_DEPTH} levels; readers could not decode "
                "it (nothing was written)"
            )
        if isinstance(item, str):
            _require_storable_text(name, item)
        elif isinstance(item, Mapping):
            for key, child in item.items():
                if isinstance(key, str):
                    _require_storable_text(name, key)
                pending.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            pending.extend((child, depth + 1) for child in item)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{name} must be JSON-serialisable: {exc}") from None
    return value


def _iso(value: datetime) -> str:
    """Return RFC 3339 UTC with a Z, the element time format of the writer."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def create_job(
    conn: psycopg.Connection[Any],
    jobspec: Mapping[str, Any],
    *,
    status: str = "queued",
    created_at: datetime | None = None,
) -> int:
    """Insert the jobs row of *jobspec* and return its ``jobs.id``.

    *jobspec* is the runner's JobSpec shape (runner-app.md section 4): ``id`` (or
    ``jobspec_id``) names the job; ``metadata.models`` and ``questions`` are what the mirror
    fans out over. It is stored as ``jobspec_data``. *status* must satisfy chk_jobs_status.
    Raises InvalidArgumentError on a bad argument, psycopg.errors.UniqueViolation when the
    jobspec_id exists (the runner has no ON CONFLICT either).
    """
    if not isinstance(jobspec, Mapping):
        raise InvalidArgumentError(
            f"jobspec must be a mapping (the JobSpec JSON), got {type(jobspec).__name__}"
        )
    jobspec_id = _require_text(
        "jobspec id", jobspec.get("id") or jobspec.get("jobspec_id"), MAX_JOBSPEC_ID
    )
    _require_json("jobspec", jobspec)
    _require_choice("status", status, JOB_STATUSES)
    row = _execute(
        conn,
        "create_job",
        {
            "jobspec_id": jobspec_id,
            "jobspec_data": Jsonb(dict(jobspec)),
            "status": status,
            "created_at": _require_time("created_at", created_at),
        },
    ).fetchone()
    assert row is not None
    return int(row[0])


def start_run(
    conn: psycopg.Connection[Any],
    jobspec_id: str,
    *,
    regions: Sequence[str],
    min_regions_required: int | None = None,
    min_success_rate: float | Decimal = Decimal("0.67"),
    run_id: uuid.UUID | None = None,
    started_at: datetime | None = None,
) -> uuid.UUID:
    """Insert the ``cross_region_executions`` row of a run and return its id.

    *regions* are the target region codes (``US``, ``EU``, ``ASIA``); ``total_regions`` is
    their number. *min_regions_required* defaults to the portal's max(1, floor(n × 0.67))
    (runner-app.md section 2.1); *min_success_rate* is a fraction in [0, 1].
    """
    _require_text("jobspec_id", jobspec_id, MAX_JOBSPEC_ID)
    if isinstance(regions, str) or not regions:
        raise InvalidArgumentError("regions must be a non-empty list of region codes")
    for region in regions:
        _require_text("region", region, MAX_REGION)
    if min_regions_required is None:
        min_regions_required = max(1, int(len(regions) * 0.67))
    if not isinstance(min_regions_required, int) or min_regions_required < 0:
        raise InvalidArgumentError(
            f"min_regions_required must be an integer >= 0, got {min_regions_required!r}"
        )
    rate = Decimal(str(min_success_rate))
    if not Decimal(0) <= rate <= Decimal(1):
        raise InvalidArgumentError(
            f"min_success_rate must be within [0, 1], got {min_success_rate!r}"
        )
    row = _execute(
        conn,
        "start_run",
        {
            "run_id": _require_uuid("run_id", run_id or uuid.uuid4()),
            "jobspec_id": jobspec_id,
            "total_regions": len(regions),
            "min_regions_required": min_regions_required,
            "min_success_rate": rate,
            "started_at": _require_time("started_at", started_at),
        },
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def start_region(
    conn: psycopg.Connection[Any],
    run_id: uuid.UUID,
    region: str,
    *,
    provider_id: str | None = None,
    region_result_id: uuid.UUID | None = None,
    started_at: datetime | None = None,
) -> uuid.UUID:
    """Insert a ``region_results`` row (status ``running``) and return its id.

    Nothing is stored in ``executions`` yet: until the region finishes, the view derives one
    placeholder row per expected pair; each pair recorded is stored as it is recorded.
    """
    _require_text("region", region, MAX_REGION)
    if provider_id is not None:
        _require_text("provider_id", provider_id, MAX_PROVIDER_ID)
    row = _execute(
        conn,
        "start_region",
        {
            "region_result_id": _require_uuid("region_result_id", region_result_id or uuid.uuid4()),
            "run_id": _require_uuid("run_id", run_id),
            "region": region,
            "provider_id": provider_id,
            "started_at": _require_time("started_at", started_at),
        },
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def pair_element(
    *,
    model_id: str,
    question_id: str,
    status: str,
    started_at: datetime | None = None,
    completed_at: datetime | None = None,
    output: object = None,
    receipt: object = None,
    error: str | None = None,
) -> dict[str, Any]:
    """Return the element :func:`record_pair` stores, checking every argument.

    Shape (SPEC "Per-pair results"): ``{model_id, question_id, status, started_at,
    completed_at, output, receipt, error}``; times are RFC 3339 UTC strings (or null).
    A finished pair (completed, failed, cancelled) given without *completed_at* finished now,
    as the runner stamps it (runner-app.md section 2.3: "when that pair finished"; a time not
    given is the time of the call, as everywhere in the writer); :func:`record_pair` raises
    that time to the pair's or the region's start when it is earlier (a clock behind them), so
    that no duration is negative. An unfinished pair keeps null. Without a time the pair's row
    would take the region's ``completed_at`` and change again when the region finishes.
    """
    _require_text("model_id", model_id, MAX_MODEL_ID)
    _require_text("question_id", question_id, MAX_QUESTION_ID)
    _require_choice("status", status, PAIR_STATUSES)
    if error is not None and not isinstance(error, str):
        raise InvalidArgumentError(f"error must be a string or None, got {type(error).__name__}")
    if error is not None:
        _require_storable_text("error", error)
    if _finished_now(status, completed_at):
        completed_at = datetime.now(UTC)
    return {
        "model_id": model_id,
        "question_id": question_id,
        "status": status,
        "started_at": None if started_at is None else _iso(_require_time("started_at", started_at)),
        "completed_at": None
        if completed_at is None
        else _iso(_require_time("completed_at", completed_at)),
        "output": _require_json("output", output),
        "receipt": _require_json("receipt", receipt),
        "error": error,
    }


def _finished_now(status: str, completed_at: datetime | None) -> bool:
    """Whether a pair recorded with *status* and *completed_at* is stamped as finished now."""
    return completed_at is None and status in FINISHED_PAIR_STATUSES


def record_pair(
    conn: psycopg.Connection[Any],
    region_result_id: uuid.UUID,
    *,
    model_id: str,
    question_id: str,
    status: str,
    started_at: datetime | None = None,
    completed_at: datetime | None = None,
    output: object = None,
    receipt: object = None,
    error: str | None = None,
) -> None:
    """Record one pair's result: append its element to ``execution_output.executions``, or
    replace the element of the same (model_id, question_id), in one statement.

    *output* is the runner's ``output_data`` object (``{"response": ..., "metadata": ...}``),
    *receipt* its ``receipt_data`` (runner-app.md section 5); both None for a failed pair,
    whose reason goes in *error*; times as :func:`pair_element` takes them. Concurrent calls
    for pairs of one region lose nothing.
    Raises InvalidArgumentError when an argument is bad or the region result does not exist.
    """
    element = pair_element(
        model_id=model_id,
        question_id=question_id,
        status=status,
        started_at=started_at,
        completed_at=completed_at,
        output=output,
        receipt=receipt,
        error=error,
    )
    row = _execute(
        conn,
        "record_pair",
        {
            "region_result_id": _require_uuid("region_result_id", region_result_id),
            "model_id": model_id,
            "question_id": question_id,
            "element": Jsonb(element),
            "finished_now": _finished_now(status, completed_at),
        },
    ).fetchone()
    if row is None:
        raise InvalidArgumentError(
            f"region result {region_result_id} does not exist; start it with start_region()"
        )


def finish_region(
    conn: psycopg.Connection[Any],
    region_result_id: uuid.UUID,
    *,
    status: str | None = None,
    completed_at: datetime | None = None,
    error_message: str | None = None,
) -> RegionSummary:
    """Close a region: status, ``completed_at``, ``duration_ms`` (ms since ``started_at``),
    ``error_message``, ``metadata`` counts and ``execution_output.data`` (the first completed
    answer, for readers of the runner's legacy format).

    *status* defaults to the runner's rule: ``success`` when at least one pair completed, else
    ``failed``; it may be given as one of success, failed, timeout, cancelled. Pairs still
    pending or running become failed ('no result recorded') in executions.

    Raises InvalidArgumentError (bad argument, unknown region result) and NotMigratedError
    (the database is below revision 0002, whose functions read the job's models and questions
    as the mirror rule does: the caller's transaction is then aborted).
    """
    if status is not None:
        _require_choice("status", status, REGION_STATUSES)
    if error_message is not None and not isinstance(error_message, str):
        raise InvalidArgumentError("error_message must be a string or None")
    if error_message is not None:
        _require_storable_text("error_message", error_message)
    params = {
        "region_result_id": _require_uuid("region_result_id", region_result_id),
        "status": status,
        "completed_at": _require_time("completed_at", completed_at),
        "error_message": error_message,
    }
    try:
        row = _execute(conn, "finish_region", params).fetchone()
    except psycopg.errors.UndefinedFunction as exc:
        raise NotMigratedError(
            "finish_region counts pairs with beaconsql's functions of revision 0002 "
            f"({exc.diag.message_primary}): run `beaconsql upgrade`, then finish the region again."
        ) from exc
    if row is None:
        raise InvalidArgumentError(f"region result {region_result_id} does not exist")
    return RegionSummary(
        status=str(row[0]),
        success_count=int(row[1]),
        failure_count=int(row[2]),
        total_executions=int(row[3]),
    )


def finish_run(
    conn: psycopg.Connection[Any],
    run_id: uuid.UUID,
    *,
    completed_at: datetime | None = None,
) -> RunSummary:
    """Close a run and its job: ``completed``, ``partial`` or ``failed`` from its regions,
    ``min_regions_required`` and ``min_success_rate``; the jobs row becomes completed, failed,
    or running for a partial run (chk_jobs_status has no partial; runner-app.md section 2.4).
    """
    row = _execute(
        conn,
        "finish_run",
        {
            "run_id": _require_uuid("run_id", run_id),
            "completed_at": _require_time("completed_at", completed_at),
        },
    ).fetchone()
    if row is None:
        raise InvalidArgumentError(f"run {run_id} does not exist; start it with start_run()")
    run_status, jobspec_id = str(row[0]), str(row[1])
    _execute(conn, "set_job_status", {"run_status": run_status, "jobspec_id": jobspec_id})
    return RunSummary(status=run_status, success_count=int(row[2]), failure_count=int(row[3]))
