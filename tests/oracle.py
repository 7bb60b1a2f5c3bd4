"""The independent oracle: the SPEC's mirror rule ("The mirror rule", "Stored or derived"),
re-implemented in Python for the tests, and what executions' mirrored rows must then be.

It shares no code with the SQL rule: a test that compares the two checks the rule, not itself.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from helpers import assert_one_mirrored_row_per_key, fetch

VOCAB = {
    **dict.fromkeys(("success", "completed", "succeeded", "done", "finished"), "completed"),
    **dict.fromkeys(("failed", "error", "timeout"), "failed"),
    **dict.fromkeys(("running", "processing", "retrying"), "running"),
    **dict.fromkeys(("queued", "pending"), "pending"),
    **dict.fromkeys(("cancelled", "canceled"), "cancelled"),
}
FINISHED = ("completed", "failed", "cancelled")
NO_RESULT = "no result recorded"
_INVALID = object()

# Columns compared, in this order (mirror-owned columns, the link and the evidence level).
ORACLE_COLUMNS = (
    "job_id",
    "cross_region_execution_id",
    "region",
    "provider_id",
    "status",
    "started_at",
    "completed_at",
    "created_at",
    "output_data",
    "receipt_data",
    "original_error",
    "mirror_evidence",
)


def _status(word: Any, has_completed_at: bool) -> str:
    """SPEC "Status": matched case-insensitively after trimming; NULL is pending; anything
    else is failed when there is a completed_at, else pending."""
    key = "pending" if word is None else str(word).strip(" \t\n\r\f\v").lower()
    if key in VOCAB:
        return VOCAB[key]
    return "failed" if has_completed_at else "pending"


def _utc_naive(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _element_time(value: Any) -> Any:
    """An element's time: None when absent or JSON null; _INVALID when unparsable, or outside
    what Python's datetime holds once in UTC (SPEC "Values a client cannot read"); else naive
    UTC (a time without a zone is UTC)."""
    if value is None:
        return None
    if not isinstance(value, str):
        return _INVALID
    if not re.fullmatch(
        r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?"
        r"(Z|[+-]\d{2}(:?\d{2})?)?)?",
        value,
    ):
        return _INVALID
    try:
        return _utc_naive(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except (ValueError, OverflowError):
        return _INVALID


def _jsonb_text(value: Any) -> str:
    """A JSON value as PostgreSQL prints a jsonb: ', ' and ': ' separators, object keys
    shortest first, then in byte order."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: (len(kv[0].encode()), kv[0].encode()))
        return (
            "{"
            + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_jsonb_text(v)}" for k, v in items)
            + "}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_jsonb_text(v) for v in value) + "]"
    if isinstance(value, float):  # jsonb keeps numbers as numeric: plain decimal notation
        return format(Decimal(json.dumps(value)), "f")
    return json.dumps(value, ensure_ascii=False)


def _error_text(value: Any) -> str | None:
    """An element's error as text: a string as it is (None when empty), any other JSON value
    as its jsonb text, JSON null as None."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else _jsonb_text(value)


def _model_id_of(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry or None
    if isinstance(entry, dict):
        for name in ("id", "model_id", "name"):
            value = entry.get(name)
            if isinstance(value, str) and value:
                return value
    return None


def _question_id_of(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry or None
    if isinstance(entry, dict):
        value = entry.get("id")
        if isinstance(value, str) and value:
            return value
    return None


def _dedup(values: list[str | None]) -> list[str]:
    out: list[str] = []
    for value in values:
        if value is not None and value not in out:
            out.append(value)
    return out


def oracle_models(spec: Any, region_model_id: str | None) -> list[str]:
    """SPEC models(J)."""
    meta = spec.get("metadata") if isinstance(spec, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    listed = meta.get("models")
    if isinstance(listed, list):
        found = _dedup([_model_id_of(e) for e in listed])
        if found:
            return found
    model = meta.get("model")
    if isinstance(model, str) and model:
        return [model]
    if region_model_id:
        return [region_model_id]
    return ["llama3.2-1b"]


def oracle_questions(spec: Any) -> list[str]:
    """SPEC questions(J)."""
    listed = spec.get("questions") if isinstance(spec, dict) else None
    if isinstance(listed, list):
        found = _dedup([_question_id_of(e) for e in listed])
        if found:
            return found
    return ["default"]


def oracle_rule(
    r: dict[str, Any], job_id: int | None, spec: Any, job_status: str | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """The rows the SPEC's mirror rule yields for region result *r* (a dict of its columns;
    started_at/completed_at None when a client cannot read them, completed_at_set whether it
    has one) and its job (id, jobspec_data and status, None when missing), keyed by
    (model_id, question_id); each row's "stored" says whether the mirror stores it (evidence 3
    or 2, or 1 once r is finished) or the view derives it (a placeholder)."""
    models = oracle_models(spec, r.get("model_id"))
    questions = oracle_questions(spec)
    r_started = _utc_naive(r["started_at"])
    r_completed = _utc_naive(r["completed_at"])
    has_completed_at = r.get("completed_at_set", r["completed_at"] is not None)
    region_status = _status(r["status"], has_completed_at)
    finished = region_status in FINISHED
    output = r["execution_output"]
    elements = output.get("executions") if isinstance(output, dict) else None

    results: dict[tuple[str, str], tuple[int, Any]] = {}
    if isinstance(elements, list):
        for el in elements:
            if not isinstance(el, dict):
                continue
            m, q = el.get("model_id"), el.get("question_id")
            if not (isinstance(m, str) and m and isinstance(q, str) and q):
                continue
            results.pop((m, q), None)  # the last element of a repeated pair wins
            results[(m, q)] = (3, el)
    elif isinstance(output, dict) and output.get("data") is not None:
        data = output["data"]
        meta = data.get("metadata") if isinstance(data, dict) else None
        said = meta.get("model") if isinstance(meta, dict) else None
        model = said if said in models else models[0]
        results[(model, questions[0])] = (2, data)

    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def emit(m: str, q: str, **fields: Any) -> None:
        if len(m) > 50 or len(q) > 255:
            return  # over-long ids are not mirrored
        started = fields.pop("started_at")
        rows[(m, q)] = {
            "stored": fields["mirror_evidence"] >= 2 or finished,
            "job_id": job_id,
            "cross_region_execution_id": r["cross_region_execution_id"],
            "region": r["region"],
            "provider_id": r["provider_id"] or "",
            "started_at": started,
            "created_at": started,
            **fields,
        }

    for (m, q), (evidence, payload) in results.items():
        if evidence == 2:
            emit(
                m,
                q,
                status="completed",
                started_at=r_started,
                completed_at=r_completed,
                output_data=payload,
                receipt_data=None,
                original_error=None,
                mirror_evidence=2,
            )
            continue
        el = payload
        status = _status(el.get("status"), el.get("completed_at") is not None or has_completed_at)
        error = _error_text(el.get("error"))
        if finished and status in ("pending", "running"):
            status, error = "failed", NO_RESULT
        started = _element_time(el.get("started_at"))
        started = r_started if started is None or started is _INVALID else started
        completed = _element_time(el.get("completed_at"))
        completed = r_completed if completed is None or completed is _INVALID else completed
        if status in ("pending", "running"):
            completed = None
        emit(
            m,
            q,
            status=status,
            started_at=started,
            completed_at=completed,
            output_data=el.get("output"),
            receipt_data=el.get("receipt"),
            original_error=error,
            mirror_evidence=3,
        )

    for m in models:
        for q in questions:
            if (m, q) in results:
                continue
            if finished:
                status = "cancelled" if region_status == "cancelled" else "failed"
                error = r["error_message"] or NO_RESULT
                completed = r_completed
            elif _status(job_status, False) == "cancelled" and job_status is not None:
                # the runner's cancel updates only rows that exist
                status, error, completed = "cancelled", None, None
            else:
                status, error, completed = region_status, None, None
            emit(
                m,
                q,
                status=status,
                started_at=r_started,
                completed_at=completed,
                output_data=None,
                receipt_data=None,
                original_error=error,
                mirror_evidence=1,
            )
    return rows


def oracle_inputs(
    conn: psycopg.Connection[Any], ids: list[uuid.UUID] | None = None
) -> list[dict[str, Any]]:
    """Region results with their run's jobspec_id and their job (plain reads of the inputs)."""
    # Times a client cannot hold (infinite, or outside years 1..9999 in UTC) read as None.
    return fetch(
        conn,
        "SELECT r.id, r.cross_region_execution_id, r.region, r.provider_id, r.status, "
        "       CASE WHEN r.started_at >= '0001-01-01 00:00+00' "
        "             AND r.started_at < '10000-01-01 00:00+00' THEN r.started_at END "
        "           AS started_at, "
        "       CASE WHEN r.completed_at >= '0001-01-01 00:00+00' "
        "             AND r.completed_at < '10000-01-01 00:00+00' THEN r.completed_at END "
        "           AS completed_at, r.completed_at IS NOT NULL AS completed_at_set, "
        "       r.execution_output, r.error_message, r.model_id, "
        "       x.jobspec_id, j.id AS job, j.jobspec_data, j.status AS job_status "
        "FROM region_results r "
        "JOIN cross_region_executions x ON x.id = r.cross_region_execution_id "
        "LEFT JOIN jobs j ON j.jobspec_id = x.jobspec_id "
        "WHERE %(ids)s::uuid[] IS NULL OR r.id = ANY(%(ids)s::uuid[])",
        {"ids": ids},
    )


def direct_keys(conn: psycopg.Connection[Any]) -> set[tuple[int, str, str, str | None]]:
    """Keys owned by direct rows (SPEC "Words": '' and NULL question ids are one value; rows
    without a job have no key)."""
    return {
        (r["job_id"], r["region"], r["model_id"], r["question_id"] or None)
        for r in fetch(
            conn,
            "SELECT job_id, region, model_id, question_id FROM executions "
            "WHERE mirror_region_result_id IS NULL AND job_id IS NOT NULL",
        )
    }


def oracle(
    conn: psycopg.Connection[Any], ids: list[uuid.UUID] | None = None
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """What executions' mirrored rows must be: {(region_result_id, model_id, question_id):
    values of ORACLE_COLUMNS} of the stored rows, keys owned by a direct row left out."""
    owned = direct_keys(conn)
    expected: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for r in oracle_inputs(conn, ids):
        rows = oracle_rule(r, r["job"], r["jobspec_data"], r["job_status"])
        for (m, q), row in rows.items():
            if not row["stored"]:
                continue
            if row["job_id"] is not None and (row["job_id"], row["region"], m, q) in owned:
                continue
            expected[(r["id"], m, q)] = tuple(row[c] for c in ORACLE_COLUMNS)
    return expected


def mirrored_rows(
    conn: psycopg.Connection[Any], ids: list[uuid.UUID] | None = None
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """executions' mirrored rows in the oracle's shape (one per link and pair is asserted)."""
    rows = fetch(
        conn,
        "SELECT mirror_region_result_id, model_id, question_id, "
        + ", ".join(f"{c}" for c in ORACLE_COLUMNS)
        + " FROM executions WHERE mirror_region_result_id IS NOT NULL"
        " AND (%(ids)s::uuid[] IS NULL OR mirror_region_result_id = ANY(%(ids)s::uuid[]))",
        {"ids": ids},
    )
    out = {
        (r["mirror_region_result_id"], r["model_id"], r["question_id"]): tuple(
            r[c] for c in ORACLE_COLUMNS
        )
        for r in rows
    }
    assert len(out) == len(rows), "two mirrored rows for one (region result, pair)"
    return out


def assert_matches_oracle(conn: psycopg.Connection[Any], ids: list[uuid.UUID] | None = None) -> int:
    """Assert executions' mirrored rows equal the oracle exactly; return their number."""
    want, have = oracle(conn, ids), mirrored_rows(conn, ids)
    missing = sorted(set(want) - set(have), key=str)
    extra = sorted(set(have) - set(want), key=str)
    differ = sorted((k for k in set(want) & set(have) if want[k] != have[k]), key=str)
    report = []
    for k in missing[:10]:
        report.append(f"missing {k}: {dict(zip(ORACLE_COLUMNS, want[k], strict=True))}")
    for k in extra[:10]:
        report.append(f"unexpected {k}: {dict(zip(ORACLE_COLUMNS, have[k], strict=True))}")
    for k in differ[:10]:
        cols = [
            (c, w, h) for c, w, h in zip(ORACLE_COLUMNS, want[k], have[k], strict=True) if w != h
        ]
        report.append(
            f"differs {k}: " + "; ".join(f"{c}: want {w!r} have {h!r}" for c, w, h in cols)
        )
    assert not report, (
        f"{len(missing)} missing, {len(extra)} unexpected, {len(differ)} differ:\n"
        + "\n".join(report)
    )
    return len(want)


def assert_exact(conn: psycopg.Connection[Any], ids: list[uuid.UUID] | None = None) -> int:
    """executions' mirrored rows equal the independent oracle's for every region result (or
    *ids*), minus direct-owned keys; no two rows share a (link, pair), none sits beside a
    direct row; return the row count."""
    count = assert_matches_oracle(conn, ids)
    assert_one_mirrored_row_per_key(conn)
    return count
