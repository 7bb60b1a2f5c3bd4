"""The view ``executions_unified`` against the contract (SPEC "The view executions_unified",
"Worked example"): one row per key per jobspec_id from direct rows, mirrored rows of mirrored
region results and the rule's rows computed on the fly; the SPEC's precedence; right before
any backfill and with triggers disabled; timestamptz columns in the SPEC's order; index plans;
readable with SELECT on the view and ``jobs`` only.

Tests that assert the contract where the implementation deviates are marked
``xfail(strict=True)`` with the reason; each carries a minimal repro in its docstring.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from conftest import dsn_of
from factories import (
    STARTED_AT,
    element,
    make_direct_execution,
    make_job,
    make_region_result,
    make_run,
)
from helpers import fetch
from psycopg import sql

from beaconsql import migration, portal, seed, writer

SPEC_COLUMNS = [
    "execution_id", "source", "region_result_id", "cross_region_execution_id", "job_id",
    "jobspec_id", "region", "provider_id", "model_id", "question_id", "status", "evidence",
    "started_at", "completed_at", "created_at", "duration_ms", "output_data", "receipt_data",
    "original_error", "system_prompt", "response_classification", "is_substantive",
    "is_content_refusal", "is_technical_error", "response_length", "retry_count",
    "max_retries", "last_retry_at", "retry_history",
]  # fmt: skip
TIME_COLUMNS = ("started_at", "completed_at", "created_at", "last_retry_at")
FINISHED = {"completed", "failed", "cancelled"}

A = "bias-detection-1760288315095"  # legacy run, 0 executions rows
B = "bias-detection-1760366783099"  # 11 direct rows in US (2 duplicates), EU legacy
C = "bias-detection-1761127327315"  # failed region, 2 failed direct rows
D = "bias-detection-1760000000000"  # no jobs row
E = "bias-detection-1760544000000"  # malformed spec
F = "bias-detection-1761300000000"  # running region


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def shown(conn: psycopg.Connection[Any], jobspec_id: str) -> list[dict[str, Any]]:
    """The view's rows of a job, in a stable order."""
    return fetch(
        conn,
        "SELECT * FROM executions_unified WHERE jobspec_id = %s "
        "ORDER BY region, model_id, question_id, execution_id",
        (jobspec_id,),
    )


def only(conn: psycopg.Connection[Any], jobspec_id: str) -> dict[str, Any]:
    rows = shown(conn, jobspec_id)
    assert len(rows) == 1, rows
    return rows[0]


def key_of(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["jobspec_id"],
        row["job_id"],
        row["region"],
        row["model_id"],
        row["question_id"] or None,
    )


def assert_one_row_per_key(rows: list[dict[str, Any]]) -> None:
    keyed = Counter(key_of(r) for r in rows if r["job_id"] is not None)
    assert [k for k, n in keyed.items() if n > 1] == []


@contextmanager
def triggers_disabled(
    conn: psycopg.Connection[Any], table: str = "region_results"
) -> Iterator[None]:
    """Skip the mirror the way the SPEC's tests do: ALTER TABLE ... DISABLE TRIGGER USER."""
    conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(sql.Identifier(table)))
    try:
        yield
    finally:
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(sql.Identifier(table)))


@contextmanager
def mode_of(conn: psycopg.Connection[Any], mode: str) -> Iterator[None]:
    """``mirrored``: region results written with the triggers on; ``derived``: skipped."""
    if mode == "derived":
        with triggers_disabled(conn):
            yield
    else:
        yield


def one_pair_job(conn: psycopg.Connection[Any], **spec_overrides: Any) -> dict[str, Any]:
    """A job expecting exactly one pair: US x m1 x q1."""
    spec = seed.jobspec(
        regions=spec_overrides.get("regions", ("US",)),
        models=spec_overrides.get("models", ("m1",)),
        questions=spec_overrides.get("questions", ("q1",)),
    )
    return make_job(conn, spec=spec)


def at(minutes: float) -> datetime:
    return STARTED_AT + timedelta(minutes=minutes)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def region_with_element(
    conn: psycopg.Connection[Any],
    job: dict[str, Any],
    *,
    status: str = "completed",
    start: float = 0,
    end: float | None = 1,
    region_status: str = "success",
    region_id: uuid.UUID | None = None,
    model_id: str = "m1",
    question_id: str = "q1",
) -> dict[str, Any]:
    """A run with one region result holding one per-pair element (evidence 3)."""
    run = make_run(conn, jobspec_id=job["jobspec_id"], started_at=at(start))
    el = element(
        model_id,
        question_id,
        status,
        started_at=iso(at(start)),
        completed_at=None if end is None else iso(at(end)),
        output={"response": f"element of run {run['id']}"},
    )
    return make_region_result(
        conn,
        id=region_id or uuid.uuid4(),
        cross_region_execution_id=run["id"],
        status=region_status,
        started_at=at(start),
        completed_at=None if end is None else at(end),
        execution_output={"executions": [el]},
    )


def legacy_region(
    conn: psycopg.Connection[Any],
    job: dict[str, Any],
    *,
    start: float = 0,
    end: float = 1,
    region_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """A run with one region result in the runner's legacy format (evidence 2 for m1/q1)."""
    run = make_run(conn, jobspec_id=job["jobspec_id"], started_at=at(start))
    return make_region_result(
        conn,
        id=region_id or uuid.uuid4(),
        cross_region_execution_id=run["id"],
        status="success",
        started_at=at(start),
        completed_at=at(end),
        execution_output={
            "data": {"response": "legacy answer", "metadata": {"model": "m1"}},
            "hash": "",
        },
    )


def bare_region(
    conn: psycopg.Connection[Any],
    job: dict[str, Any],
    *,
    status: str,
    start: float = 0,
    end: float | None = 1,
    region_id: uuid.UUID | None = None,
    error_message: str | None = None,
) -> dict[str, Any]:
    """A run with one region result without any result (evidence 1 rows)."""
    run = make_run(conn, jobspec_id=job["jobspec_id"], started_at=at(start))
    return make_region_result(
        conn,
        id=region_id or uuid.uuid4(),
        cross_region_execution_id=run["id"],
        status=status,
        started_at=at(start),
        completed_at=None if end is None else at(end),
        execution_output=None,
        error_message=error_message,
    )


def comparable(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Every column but execution_id and source, as a sortable multiset."""
    out = []
    for r in rows:
        out.append(tuple(repr(r[c]) for c in SPEC_COLUMNS if c not in ("execution_id", "source")))
    return sorted(out)


@pytest.fixture
def adopted(runner_db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The runner's database with history, adopted (``upgrade head``) and NOT backfilled."""
    runner_db.autocommit = True
    migration.upgrade(dsn_of(runner_db))
    return runner_db


# --------------------------------------------------------------------------------------------
# An adopted runner database, no backfill
# --------------------------------------------------------------------------------------------


def test_adopted_runner_history_one_row_per_key_with_precedence(adopted):
    conn = adopted
    # Nothing was mirrored yet: every rule row comes from the view itself.
    assert (
        fetch(
            conn, "SELECT count(*) AS n FROM executions WHERE mirror_region_result_id IS NOT NULL"
        )[0]["n"]
        == 0
    )
    everything = fetch(conn, "SELECT * FROM executions_unified")
    assert_one_row_per_key(everything)
    by_job = Counter(r["jobspec_id"] for r in everything)
    assert by_job == {A: 18, B: 18, C: 2, D: 1, E: 1, F: 9}

    # A: legacy run, no executions rows: 2 completed answers (one per region) + 16 failed.
    a = shown(conn, A)
    assert {r["source"] for r in a} == {"derived"}
    assert all(r["execution_id"] is None and r["job_id"] == 11 for r in a)
    completed = [
        (r["region"], r["model_id"], r["question_id"], r["evidence"])
        for r in a
        if r["status"] == "completed"
    ]
    assert sorted(completed) == [
        ("EU", "llama3.2-1b", "greatest_invention", 2),
        ("US", "llama3.2-1b", "greatest_invention", 2),
    ]
    failed = [r for r in a if r["status"] == "failed"]
    assert len(failed) == 16
    assert {(r["evidence"], r["original_error"]) for r in failed} == {(1, "no result recorded")}

    # B: the runner's US direct rows own their keys (newest duplicate shown: 210 over 201,
    # 211 over 205); EU comes from the legacy region row, derived.
    b = shown(conn, B)
    us = [r for r in b if r["region"] == "US"]
    eu = [r for r in b if r["region"] == "EU"]
    assert {r["source"] for r in us} == {"direct"}
    assert sorted(r["execution_id"] for r in us) == [202, 203, 204, 206, 207, 208, 209, 210, 211]
    assert {r["source"] for r in eu} == {"derived"} and len(eu) == 9
    assert Counter(r["status"] for r in eu) == {"completed": 1, "failed": 8}
    failed_209 = next(r for r in us if r["execution_id"] == 209)
    assert failed_209["status"] == "failed" and failed_209["output_data"] is None

    # C: two failed direct rows beat the failed region's evidence-1 rows.
    c = shown(conn, C)
    assert [(r["execution_id"], r["source"], r["status"]) for r in c] == [
        (221, "direct", "failed"),
        (222, "direct", "failed"),
    ]

    # D: no jobs row: one derived row, job_id NULL, found by its jobspec_id.
    [d] = shown(conn, D)
    assert (d["source"], d["job_id"], d["model_id"], d["question_id"], d["status"]) == (
        "derived",
        None,
        "llama3.2-1b",
        "default",
        "completed",
    )

    # E: malformed spec: metadata.model, questions ['default'], the answer kept.
    [e] = shown(conn, E)
    assert (e["model_id"], e["question_id"], e["status"], e["evidence"]) == (
        "qwen2.5-1.5b",
        "default",
        "completed",
        2,
    )

    # F: a running region: 9 running pairs, no completed_at.
    f = shown(conn, F)
    assert {(r["region"], r["status"], r["evidence"]) for r in f} == {("US", "running", 1)}
    assert all(r["completed_at"] is None for r in f)
    assert {r["provider_id"] for r in f} == {""}  # R.provider_id NULL


def test_adopted_runner_view_unchanged_by_backfill_apply(adopted):
    """What the backfill does (region_results_mirror_apply over every region result) does not
    change what the view shows, on the runner's history plus writes made with the triggers
    disabled (insert, update of a mirrored region result, delete)."""
    conn = adopted
    job = one_pair_job(conn, models=("m1", "m2"), questions=("q1", "q2"))
    mirrored_first = region_with_element(conn, job)  # mirrored by the triggers
    doomed = legacy_region(conn, one_pair_job(conn))
    with triggers_disabled(conn):
        region_with_element(conn, one_pair_job(conn), status="failed")  # new, not mirrored
        conn.execute(
            "UPDATE region_results SET execution_output = %s::jsonb WHERE id = %s",
            (
                '{"executions": [{"model_id": "m2", "question_id": "q2", "status": "completed",'
                ' "output": {"response": "changed"}}]}',
                mirrored_first["id"],
            ),
        )
        conn.execute("DELETE FROM region_results WHERE id = %s", (doomed["id"],))
    # a job's spec changed while its trigger was skipped: its region results are not
    # mirrored any more (their rows reflect the old spec), so the view derives them
    respec = one_pair_job(conn)
    region_with_element(conn, respec)
    with triggers_disabled(conn, "jobs"):
        conn.execute(
            "UPDATE jobs SET jobspec_data = jsonb_set(jobspec_data, '{questions}', "
            '\'["q1", "q2"]\') WHERE id = %s',
            (respec["id"],),
        )
    before = fetch(conn, "SELECT * FROM executions_unified")
    assert {
        (r["source"], r["question_id"], r["status"])
        for r in before
        if r["jobspec_id"] == respec["jobspec_id"]
    } == {("derived", "q1", "completed"), ("derived", "q2", "failed")}
    assert_one_row_per_key(before)
    # the changed region result shows its new values, derived (its old mirrored rows hidden)
    changed = [r for r in before if r["region_result_id"] == mirrored_first["id"]]
    assert {r["source"] for r in changed} == {"derived"}
    assert {(r["model_id"], r["question_id"], r["status"]) for r in changed} == {
        ("m1", "q1", "failed"),
        ("m1", "q2", "failed"),
        ("m2", "q1", "failed"),
        ("m2", "q2", "completed"),
    }
    # the deleted one shows nothing any more
    assert [r for r in before if r["region_result_id"] == doomed["id"]] == []

    conn.execute("SELECT * FROM region_results_mirror_apply(ARRAY(SELECT id FROM region_results))")
    after = fetch(conn, "SELECT * FROM executions_unified")
    assert comparable(after) == comparable(before)
    # and the apply did materialise: only placeholders of unfinished regions are derived
    assert {r["source"] for r in after} == {"direct", "mirrored", "derived"}
    assert {
        (r["evidence"], r["status"], r["execution_id"]) for r in after if r["source"] == "derived"
    } <= {(1, "pending", None), (1, "running", None)}


# --------------------------------------------------------------------------------------------
# Precedence
# --------------------------------------------------------------------------------------------


def test_precedence_direct_row_over_mirrored_row(db):
    job = one_pair_job(db)
    region_with_element(db, job, start=5, end=6)  # evidence 3, completed, newest
    # A direct row that arrived while the claim trigger was skipped: both rows exist.
    with triggers_disabled(db, "executions"):
        direct = make_direct_execution(
            db,
            job_id=job["id"],
            model_id="m1",
            question_id="q1",
            status="failed",
            started_at=at(0).replace(tzinfo=None),
            completed_at=at(0.5).replace(tzinfo=None),
            created_at=at(0).replace(tzinfo=None),
        )
    assert (
        fetch(db, "SELECT count(*) AS n FROM executions WHERE job_id = %s", (job["id"],))[0]["n"]
        == 2
    )
    row = only(db, job["jobspec_id"])
    assert (row["source"], row["execution_id"], row["status"]) == ("direct", direct["id"], "failed")


def test_precedence_direct_row_over_derived_row(db):
    job = one_pair_job(db)
    with triggers_disabled(db):
        region_with_element(db, job, start=5, end=6)
    direct = make_direct_execution(
        db,
        job_id=job["id"],
        model_id="m1",
        question_id="q1",
        status="running",
        started_at=at(0).replace(tzinfo=None),
        completed_at=None,
        created_at=at(0).replace(tzinfo=None),
    )
    row = only(db, job["jobspec_id"])
    assert (row["source"], row["execution_id"], row["status"]) == (
        "direct",
        direct["id"],
        "running",
    )


@pytest.mark.parametrize("mode", ["mirrored", "derived"])
def test_precedence_evidence_3_over_2_over_1(db, mode):
    # 3 over 2: the per-pair element (failed, older) beats the legacy answer (completed, newer).
    job = one_pair_job(db)
    with mode_of(db, mode):
        legacy_region(db, job, start=10, end=11)
        el = region_with_element(db, job, status="failed", start=0, end=1)
    row = only(db, job["jobspec_id"])
    assert (row["source"], row["region_result_id"], row["evidence"], row["status"]) == (
        mode,
        el["id"],
        3,
        "failed",
    )

    # 2 over 1: the legacy answer (older) beats a newer finished region without results.
    job = one_pair_job(db)
    with mode_of(db, mode):
        legacy = legacy_region(db, job, start=0, end=1)
        bare_region(db, job, status="failed", start=10, end=11)
    row = only(db, job["jobspec_id"])
    assert (row["region_result_id"], row["evidence"], row["status"]) == (
        legacy["id"],
        2,
        "completed",
    )


def test_precedence_evidence_across_mirrored_and_derived(db):
    job = one_pair_job(db)
    legacy_region(db, job, start=10, end=11)  # mirrored, evidence 2, newer
    with triggers_disabled(db):
        el = region_with_element(db, job, status="completed", start=0, end=1)  # derived, 3
    row = only(db, job["jobspec_id"])
    assert (row["source"], row["region_result_id"], row["evidence"]) == ("derived", el["id"], 3)


@pytest.mark.parametrize("mode", ["mirrored", "derived"])
def test_precedence_finished_over_unfinished(db, mode):
    # Same evidence (1): a failed region (older) beats a newer region still running.
    job = one_pair_job(db)
    with mode_of(db, mode):
        done = bare_region(db, job, status="failed", start=0, end=1, error_message="boom")
        bare_region(db, job, status="running", start=10, end=None)
    row = only(db, job["jobspec_id"])
    assert (row["region_result_id"], row["status"], row["original_error"]) == (
        done["id"],
        "failed",
        "boom",
    )


def test_precedence_finished_over_unfinished_among_direct_rows(db):
    """Two direct rows of one key (legacy duplicates): the finished one, although older and
    with the lower id, beats a running one whose completed_at is newer."""
    job = one_pair_job(db)
    naive = lambda m: at(m).replace(tzinfo=None)  # noqa: E731
    finished = make_direct_execution(
        db,
        job_id=job["id"],
        model_id="m1",
        question_id="q1",
        status="cancelled",
        started_at=naive(0),
        completed_at=naive(1),
        created_at=naive(0),
    )
    make_direct_execution(
        db,
        job_id=job["id"],
        model_id="m1",
        question_id="q1",
        status="running",
        started_at=naive(10),
        completed_at=naive(11),
        created_at=naive(10),
    )
    row = only(db, job["jobspec_id"])
    assert (row["execution_id"], row["status"]) == (finished["id"], "cancelled")


def test_precedence_a_detached_row_carries_no_evidence(db):
    """The runner cancels a mirrored row (detached: a direct row now, `cancelled`, still
    carrying mirror_evidence 3), then writes a direct `completed` row of the same key later:
    among direct rows the finished and newest wins, whatever their evidence."""
    job = one_pair_job(db)
    region_with_element(db, job, start=0, end=1, status="running")
    mirrored = fetch(db, "SELECT id FROM executions WHERE job_id = %s", (job["id"],))[0]["id"]
    db.execute(
        "UPDATE executions SET status = 'cancelled', completed_at = %s WHERE id = %s",
        (at(5).replace(tzinfo=None), mirrored),
    )
    detached = fetch(db, "SELECT * FROM executions WHERE id = %s", (mirrored,))[0]
    assert detached["mirror_region_result_id"] is None and detached["mirror_evidence"] == 3
    later = make_direct_execution(
        db,
        job_id=job["id"],
        model_id="m1",
        question_id="q1",
        status="completed",
        started_at=at(8).replace(tzinfo=None),
        completed_at=at(9).replace(tzinfo=None),
        created_at=at(8).replace(tzinfo=None),
    )
    row = only(db, job["jobspec_id"])
    assert (row["execution_id"], row["status"]) == (later["id"], "completed")


def test_precedence_null_status_counts_as_unfinished(db):
    """Repro (psql, database at head, any job id 1):
    INSERT INTO executions (id, job_id, provider_id, region, status, started_at,
           completed_at, created_at, model_id, question_id) VALUES
      (9001, 1, 'p', 'ASIA', 'completed', '2025-10-12 10:00', '2025-10-12 10:05',
       '2025-10-12 10:00', 'm', 'q'),
      (9002, 1, 'p', 'ASIA', NULL, '2025-10-12 09:00', '2025-10-12 09:05',
       '2025-10-12 09:00', 'm', 'q');
    SELECT execution_id, status FROM executions_unified WHERE region = 'ASIA';
    -- shows 9002 (status NULL); the contract's rule (3) says 9001 (finished).
    """
    job = one_pair_job(db)
    naive = lambda m: at(m).replace(tzinfo=None)  # noqa: E731
    finished = make_direct_execution(
        db,
        job_id=job["id"],
        model_id="m1",
        question_id="q1",
        status="completed",
        started_at=naive(10),
        completed_at=naive(11),
        created_at=naive(10),
    )
    make_direct_execution(
        db,
        job_id=job["id"],
        model_id="m1",
        question_id="q1",
        status=None,
        started_at=naive(0),
        completed_at=naive(1),
        created_at=naive(0),
    )
    row = only(db, job["jobspec_id"])
    assert (row["execution_id"], row["status"]) == (finished["id"], "completed")


@pytest.mark.parametrize("mode", ["mirrored", "derived"])
def test_precedence_newest_completed_at_then_created_at(db, mode):
    # completed_at first: the run that started earlier but finished later wins.
    job = one_pair_job(db)
    with mode_of(db, mode):
        late_finisher = region_with_element(db, job, start=0, end=20)
        region_with_element(db, job, start=10, end=15)
    row = only(db, job["jobspec_id"])
    assert row["region_result_id"] == late_finisher["id"]

    # same completed_at: the newer created_at (= started_at) wins, inserted first.
    job = one_pair_job(db)
    with mode_of(db, mode):
        newer = region_with_element(
            db, job, start=10, end=20, region_id=uuid.UUID(int=1)
        )  # lower id, lower uuid
        region_with_element(db, job, start=0, end=20, region_id=uuid.UUID(int=2))
    row = only(db, job["jobspec_id"])
    assert row["region_result_id"] == newer["id"]
    assert row["created_at"] == at(10)


def test_precedence_region_result_id_desc_then_execution_id_desc(db):
    """The newest among tied candidates: the SPEC lists execution_id before region_result_id,
    which would let a backfill change what the view shows (a derived row, with no execution id,
    loses to a mirrored one until mirrored itself); candidates of region results therefore rank
    by region_result_id first, whether mirrored or derived, and direct rows by execution_id."""
    # two mirrored rows, same times: the higher region_result_id wins, even though it was
    # inserted first (lower execution_id).
    job = one_pair_job(db)
    high = region_with_element(db, job, region_id=uuid.UUID(int=0xF0))
    region_with_element(db, job, region_id=uuid.UUID(int=0x0F))
    row = only(db, job["jobspec_id"])
    assert (row["source"], row["region_result_id"]) == ("mirrored", high["id"])

    # mirrored vs derived, same times: the derived row's region result id is the higher one.
    job = one_pair_job(db)
    region_with_element(db, job, region_id=uuid.UUID(int=0x100))
    with triggers_disabled(db):
        derived = region_with_element(db, job, region_id=uuid.UUID(int=0x200))
    row = only(db, job["jobspec_id"])
    assert (row["source"], row["region_result_id"]) == ("derived", derived["id"])

    # two derived rows, same times: the higher region_result_id wins (inserted first).
    job = one_pair_job(db)
    with triggers_disabled(db):
        high = region_with_element(db, job, region_id=uuid.UUID(int=0x400))
        region_with_element(db, job, region_id=uuid.UUID(int=0x300))
    row = only(db, job["jobspec_id"])
    assert (row["source"], row["region_result_id"]) == ("derived", high["id"])


def test_backfill_never_changes_the_view_even_on_exact_ties(db):
    """Repro: one job, one key; run 1 (region result ...0100) mirrored by the triggers, run 2
    (region result ...0200) with the very same element times written with the triggers
    disabled. The view shows run 1's mirrored row (execution_id beats NULL). After
    region_results_mirror_apply(ARRAY(SELECT id FROM region_results)) run 2's row has the
    higher execution_id and the view shows run 2's row instead."""
    job = one_pair_job(db)
    region_with_element(db, job, region_id=uuid.UUID(int=0x100))
    with triggers_disabled(db):
        region_with_element(db, job, region_id=uuid.UUID(int=0x200))
    before = shown(db, job["jobspec_id"])
    db.execute("SELECT * FROM region_results_mirror_apply(ARRAY(SELECT id FROM region_results))")
    after = shown(db, job["jobspec_id"])
    assert comparable(after) == comparable(before)


@pytest.mark.parametrize("mode", ["mirrored", "derived"])
def test_precedence_completed_at_nulls_last(db, mode):
    # Two failed regions without results; the newer one has no completed_at at all.
    job = one_pair_job(db)
    with mode_of(db, mode):
        dated = bare_region(db, job, status="failed", start=0, end=1)
        bare_region(db, job, status="failed", start=10, end=None)
    row = only(db, job["jobspec_id"])
    assert row["region_result_id"] == dated["id"]
    assert row["completed_at"] == at(1)


def test_direct_rows_without_job_appear_once_each(db):
    rows = [
        make_direct_execution(db, job_id=None, model_id="m1", question_id="q1") for _ in range(2)
    ]
    ids = [r["id"] for r in rows]
    seen = fetch(db, "SELECT * FROM executions_unified WHERE execution_id = ANY(%s)", (ids,))
    assert sorted(r["execution_id"] for r in seen) == sorted(ids)
    assert {(r["source"], r["job_id"], r["jobspec_id"]) for r in seen} == {("direct", None, None)}


def test_logged_row_without_job_kept_after_its_region_result_went_is_shown(db):
    """A mirrored row without a job (its run's job row is missing) that the transparency log
    references; its region result is deleted while the triggers are skipped. The mirror keeps
    such a row (as a direct row, once a backfill detaches it), so the view shows it before the
    backfill as after. (Once: the view's branch for such rows joined jobs, so it appeared only
    after the backfill.)"""
    run = make_run(db)
    rr = make_region_result(
        db, cross_region_execution_id=run["id"], status="failed", completed_at=at(1)
    )
    [row] = fetch(db, "SELECT * FROM executions WHERE mirror_region_result_id = %s", (rr["id"],))
    assert row["job_id"] is None
    db.execute(
        "INSERT INTO transparency_log (execution_id, job_id, region, provider_id, status) "
        "VALUES (%s, '', %s, %s, %s)",
        (row["id"], row["region"], row["provider_id"], row["status"]),
    )
    with triggers_disabled(db):
        db.execute("DELETE FROM region_results WHERE id = %s", (rr["id"],))

    def seen() -> list[dict[str, Any]]:
        return fetch(
            db,
            "SELECT execution_id, source, job_id, status FROM executions_unified "
            "WHERE execution_id = %s",
            (row["id"],),
        )

    before = seen()
    assert before == [
        {"execution_id": row["id"], "source": "direct", "job_id": None, "status": "failed"}
    ]
    db.execute("SELECT * FROM region_results_mirror_apply(%s)", ([rr["id"]],))
    assert fetch(
        db, "SELECT mirror_region_result_id FROM executions WHERE id = %s", (row["id"],)
    ) == [{"mirror_region_result_id": None}]
    assert seen() == before


def test_older_logged_row_whose_region_result_went_outranks_a_newer_mirrored_row(db):
    """Two runs of a job in one region, both mirrored; the older run's region result is deleted
    while the triggers are skipped, and the transparency log references one of its rows: that
    row is direct now, and a direct row outranks every mirrored one, however newer. The view
    shows it for its key (before a backfill and after), and the newer run's rows for the rest.
    (Version 2 of the view asks whether a candidate outranks a mirrored row only when its rank
    as a mirrored row is greater, or when it may be direct: this is the second case.)"""
    spec = seed.jobspec(f"logged-{uuid.uuid4().hex[:8]}", regions=("US",))
    writer.create_job(db, spec)
    older, newer = (
        seed.record_with_writer(
            db, spec, started_at=STARTED_AT + timedelta(hours=n), create_job=False
        ).region_result_ids["US"]
        for n in range(2)
    )
    [logged] = fetch(
        db,
        "SELECT id, region, provider_id, status, model_id, question_id FROM executions "
        "WHERE mirror_region_result_id = %s ORDER BY id LIMIT 1",
        (older,),
    )
    db.execute(
        "INSERT INTO transparency_log (execution_id, job_id, region, provider_id, status) "
        "VALUES (%s, %s, %s, %s, %s)",
        (logged["id"], spec["id"], logged["region"], logged["provider_id"], logged["status"]),
    )
    with triggers_disabled(db):
        db.execute("DELETE FROM region_results WHERE id = %s", (older,))

    def seen() -> dict[tuple[str, str], tuple[str, Any]]:
        return {
            (r["model_id"], r["question_id"]): (r["source"], r["execution_id"])
            for r in shown(db, spec["id"])
        }

    before = seen()
    assert len(before) == len(seed.MODELS) * len(seed.QUESTIONS)
    assert before.pop((logged["model_id"], logged["question_id"])) == ("direct", logged["id"])
    newer_ids = {
        r[0]
        for r in db.execute(
            "SELECT id FROM executions WHERE mirror_region_result_id = %s", (newer,)
        ).fetchall()
    }
    assert {source for source, _ in before.values()} == {"mirrored"}
    assert {execution_id for _, execution_id in before.values()} <= newer_ids
    db.execute("SELECT * FROM region_results_mirror_apply(%s)", ([older],))
    assert seen()[(logged["model_id"], logged["question_id"])] == ("direct", logged["id"])


def test_empty_and_null_question_id_are_one_key(db):
    job = one_pair_job(db)
    naive = at(0).replace(tzinfo=None)
    make_direct_execution(
        db,
        job_id=job["id"],
        region="ASIA",
        model_id="m1",
        question_id="",
        started_at=naive,
        created_at=naive,
    )
    newer = make_direct_execution(
        db,
        job_id=job["id"],
        region="ASIA",
        model_id="m1",
        question_id=None,
        started_at=naive + timedelta(minutes=1),
        created_at=naive + timedelta(minutes=1),
    )
    rows = [r for r in shown(db, job["jobspec_id"]) if r["region"] == "ASIA"]
    assert [r["execution_id"] for r in rows] == [newer["id"]]


def test_derived_rows_carry_executions_column_defaults(db):
    job = one_pair_job(db, models=("m1", "m2"))
    with triggers_disabled(db):
        region = region_with_element(db, job)
    rows = shown(db, job["jobspec_id"])
    assert len(rows) == 2
    for row in rows:
        assert row["execution_id"] is None
        assert row["source"] == "derived"
        assert row["region_result_id"] == region["id"]
        assert row["cross_region_execution_id"] == region["cross_region_execution_id"]
        assert row["job_id"] == job["id"]
        assert (
            row["system_prompt"],
            row["response_classification"],
            row["is_substantive"],
            row["is_content_refusal"],
            row["is_technical_error"],
            row["response_length"],
            row["retry_count"],
            row["max_retries"],
            row["last_retry_at"],
            row["retry_history"],
        ) == (None, "unknown", False, False, False, 0, 0, 3, None, [])
    # and the same as the executions columns' defaults a mirrored row gets
    db.execute("SELECT * FROM region_results_mirror_apply(ARRAY[%s]::uuid[])", (region["id"],))
    assert comparable(shown(db, job["jobspec_id"])) == comparable(rows)
    assert {r["source"] for r in shown(db, job["jobspec_id"])} == {"mirrored"}


def test_triggers_disabled_writes_show_up_derived_like_the_mirror_would(db):
    """The same run written with the triggers on and off shows the same rows."""
    spec_kwargs = {"regions": ("US",), "models": ("m1", "m2"), "questions": ("q1", "q2")}
    shown_by_mode = {}
    for mode in ("mirrored", "derived"):
        job = one_pair_job(db, **spec_kwargs)
        with mode_of(db, mode):
            run = make_run(db, jobspec_id=job["jobspec_id"])
            make_region_result(
                db,
                cross_region_execution_id=run["id"],
                status="success",
                started_at=at(0),
                completed_at=at(5),
                execution_output={
                    "executions": [
                        element("m1", "q1", "completed"),
                        element("m2", "q2", "running", completed_at=None),
                    ]
                },
            )
        rows = shown(db, job["jobspec_id"])
        assert {r["source"] for r in rows} == {mode}
        shown_by_mode[mode] = [
            {
                k: v
                for k, v in r.items()
                if k
                not in (
                    "execution_id",
                    "source",
                    "region_result_id",
                    "job_id",
                    "jobspec_id",
                    "cross_region_execution_id",
                )
            }
            for r in rows
        ]
    assert shown_by_mode["derived"] == shown_by_mode["mirrored"]
    statuses = [(r["model_id"], r["question_id"], r["status"]) for r in shown_by_mode["derived"]]
    assert statuses == [
        ("m1", "q1", "completed"),
        ("m1", "q2", "failed"),
        ("m2", "q1", "failed"),
        ("m2", "q2", "failed"),
    ]


def writer_story(conn: psycopg.Connection[Any], jobspec_id: str) -> None:
    """A run recorded pair by pair through the writer (the triggers' append fast path when
    they are on): a replaced element, a pair outside models x questions, a region finished
    with pairs missing, another left running."""
    spec = seed.jobspec(
        jobspec_id, regions=("US", "EU"), models=("m1", "m2"), questions=("q1", "q2")
    )
    writer.create_job(conn, spec, created_at=STARTED_AT)
    run = writer.start_run(conn, jobspec_id, regions=["US", "EU"], started_at=STARTED_AT)
    us = writer.start_region(conn, run, "US", provider_id="modal-us-east", started_at=at(0))
    eu = writer.start_region(conn, run, "EU", started_at=at(0))

    def pair(region: uuid.UUID, m: str, q: str, status: str, minute: float) -> None:
        writer.record_pair(
            conn,
            region,
            model_id=m,
            question_id=q,
            status=status,
            started_at=at(minute),
            completed_at=at(minute + 0.5) if status in FINISHED else None,
            output={"response": f"{m}/{q}/{status}"} if status == "completed" else None,
            error="boom" if status == "failed" else None,
        )

    pair(us, "m1", "q1", "running", 1)
    pair(us, "m1", "q1", "completed", 2)  # replaces the running element
    pair(us, "m2", "q2", "failed", 3)
    pair(us, "m9", "q1", "completed", 4)  # outside models x questions
    pair(eu, "m1", "q2", "completed", 5)
    pair(eu, "m2", "q1", "running", 6)
    writer.finish_region(conn, us, completed_at=at(10))  # m1/q2, m2/q1 never recorded


def test_writer_runs_show_the_same_with_triggers_on_and_off_and_after_apply(db):
    with_triggers, without = "bias-detection-story-on", "bias-detection-story-off"
    writer_story(db, with_triggers)
    with triggers_disabled(db), triggers_disabled(db, "jobs"):
        writer_story(db, without)
    on, off = shown(db, with_triggers), shown(db, without)
    # Stored rows are mirrored; the placeholders of the unfinished EU region are derived.
    assert {(r["source"], r["evidence"] == 1 and r["region"] == "EU") for r in on} == {
        ("mirrored", False),
        ("derived", True),
    }
    assert {r["source"] for r in off} == {"derived"}
    ignore = (
        "execution_id",
        "source",
        "region_result_id",
        "cross_region_execution_id",
        "job_id",
        "jobspec_id",
    )
    assert [{k: v for k, v in r.items() if k not in ignore} for r in on] == [
        {k: v for k, v in r.items() if k not in ignore} for r in off
    ]
    assert [(r["region"], r["model_id"], r["question_id"], r["status"]) for r in on] == [
        ("EU", "m1", "q1", "running"),
        ("EU", "m1", "q2", "completed"),
        ("EU", "m2", "q1", "running"),
        ("EU", "m2", "q2", "running"),
        ("US", "m1", "q1", "completed"),
        ("US", "m1", "q2", "failed"),
        ("US", "m2", "q1", "failed"),
        ("US", "m2", "q2", "failed"),
        ("US", "m9", "q1", "completed"),
    ]
    before = fetch(db, "SELECT * FROM executions_unified")
    db.execute("SELECT * FROM region_results_mirror_apply(ARRAY(SELECT id FROM region_results))")
    assert comparable(fetch(db, "SELECT * FROM executions_unified")) == comparable(before)


# --------------------------------------------------------------------------------------------
# Columns and times
# --------------------------------------------------------------------------------------------


def test_view_columns_are_the_spec_list_in_order(db):
    rows = fetch(
        db,
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type "
        "FROM pg_attribute a WHERE a.attrelid = 'public.executions_unified'::regclass "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    )
    assert [r["attname"] for r in rows] == SPEC_COLUMNS
    types = {r["attname"]: r["type"] for r in rows}
    for column in TIME_COLUMNS:
        assert types[column] == "timestamp with time zone", column


@pytest.mark.parametrize("timezone", ["America/Los_Angeles", "Asia/Kolkata"])
def test_view_times_equal_naive_utc_values_whatever_the_session_timezone(db, timezone):
    job = one_pair_job(db, models=("m1", "m2"))
    naive_start = datetime(2025, 10, 12, 17, 0, 3, 250000)
    direct = make_direct_execution(
        db,
        job_id=job["id"],
        region="ASIA",
        model_id="m1",
        question_id="q1",
        started_at=naive_start,
        completed_at=naive_start + timedelta(seconds=7),
        created_at=naive_start,
        last_retry_at=datetime(2025, 10, 12, 18, 0, tzinfo=UTC),
    )
    mirrored_region = region_with_element(db, job, start=0, end=1)
    job2 = one_pair_job(db)
    with triggers_disabled(db):
        run = make_run(db, jobspec_id=job2["jobspec_id"])
        make_region_result(
            db,
            cross_region_execution_id=run["id"],
            status="success",
            started_at=at(0),
            completed_at=at(9),
            execution_output={
                "executions": [
                    element(
                        "m1",
                        "q1",
                        started_at="2025-10-12T17:00:00",  # no zone: UTC
                        completed_at="2025-10-12T19:30:00+02:00",
                    )
                ]
            },
        )
    db.execute(sql.SQL("SET TimeZone = {}").format(sql.Literal(timezone)))
    try:
        [d] = [r for r in shown(db, job["jobspec_id"]) if r["execution_id"] == direct["id"]]
        assert d["started_at"] == naive_start.replace(tzinfo=UTC)
        assert d["completed_at"] == (naive_start + timedelta(seconds=7)).replace(tzinfo=UTC)
        assert d["created_at"] == naive_start.replace(tzinfo=UTC)
        assert d["last_retry_at"] == datetime(2025, 10, 12, 18, 0, tzinfo=UTC)
        assert d["duration_ms"] == 7000

        mirrored = [
            r
            for r in shown(db, job["jobspec_id"])
            if r["region_result_id"] == mirrored_region["id"] and r["model_id"] == "m1"
        ]
        assert [(r["started_at"], r["completed_at"], r["created_at"]) for r in mirrored] == [
            (at(0), at(1), at(0))
        ]

        [derived] = shown(db, job2["jobspec_id"])
        assert derived["source"] == "derived"
        assert (derived["started_at"], derived["completed_at"], derived["created_at"]) == (
            at(0),
            at(30),
            at(0),
        )
        assert derived["duration_ms"] == 30 * 60 * 1000
        # the timestamptz values read back as the naive UTC text in a UTC session too
        text = fetch(
            db,
            "SELECT (started_at AT TIME ZONE 'UTC')::text AS t "
            "FROM executions_unified WHERE execution_id = %s",
            (direct["id"],),
        )
        assert text[0]["t"] == "2025-10-12 17:00:03.25"
    finally:
        db.execute("RESET TimeZone")


# --------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------

FILLER = """
ALTER TABLE region_results DISABLE TRIGGER USER;
ALTER TABLE executions DISABLE TRIGGER USER;
ALTER TABLE jobs DISABLE TRIGGER USER;
INSERT INTO jobs (jobspec_id, jobspec_data, status, created_at, updated_at)
SELECT 'filler-' || g,
       jsonb_build_object('id', 'filler-' || g,
                          'metadata', jsonb_build_object('models', jsonb_build_array('m1', 'm2')),
                          'questions', jsonb_build_array('q1', 'q2', 'q3'),
                          'constraints',
                          jsonb_build_object('regions', jsonb_build_array('US', 'EU'))),
       'completed', timestamp '2025-10-01' + g * interval '1 minute',
       timestamp '2025-10-01' + g * interval '1 minute'
FROM generate_series(1, 5000) g;
INSERT INTO cross_region_executions (id, jobspec_id, total_regions, status, started_at)
SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'filler-' || g, 2,
       'completed', timestamptz '2025-10-01 00:00+00' + g * interval '1 minute'
FROM generate_series(1, 5000) g;
INSERT INTO region_results (id, cross_region_execution_id, region, provider_id, status,
                            started_at, completed_at, execution_output)
SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, r, 'p',
       'success', timestamptz '2025-10-01 00:00+00' + g * interval '1 minute',
       timestamptz '2025-10-01 00:00+00' + g * interval '1 minute' + interval '30 s',
       jsonb_build_object('data', jsonb_build_object('response', 'x'), 'hash', '')
FROM generate_series(1, 5000) g CROSS JOIN (VALUES ('US'), ('EU')) v(r);
INSERT INTO executions (job_id, provider_id, region, status, started_at, completed_at,
                        created_at, model_id, question_id)
SELECT j.id, 'p', 'ASIA', 'completed', j.created_at, j.created_at + interval '5 s',
       j.created_at, 'm' || k, 'q1'
FROM jobs j CROSS JOIN generate_series(1, 10) k WHERE j.jobspec_id LIKE 'filler-%';
ALTER TABLE region_results ENABLE TRIGGER USER;
ALTER TABLE executions ENABLE TRIGGER USER;
ALTER TABLE jobs ENABLE TRIGGER USER;
"""


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def seq_scans(plan: dict[str, Any]) -> list[str]:
    return [
        n.get("Relation Name", "?")
        for n in plan_nodes(plan)
        if n["Node Type"] == "Seq Scan"
        and n.get("Relation Name") in ("executions", "region_results")
    ]


def explain(db: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN's plan of *query* with *params* bound client-side (a custom plan)."""
    bound = psycopg.ClientCursor(db).mogrify(query, params)
    return db.execute("EXPLAIN (FORMAT JSON) " + bound).fetchone()[0][0]["Plan"]  # type: ignore[index]


def executed_plans(
    db: psycopg.Connection[Any], query: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """The plans PostgreSQL ran for *query*: its own and those of the statements the functions
    it calls ran (auto_explain, its plans sent to this client), as {"Query Text", "Plan"}."""
    notices: list[str] = []

    def keep(diagnostic: psycopg.errors.Diagnostic) -> None:
        notices.append(diagnostic.message_primary or "")

    settings = {
        "auto_explain.log_min_duration": "0",
        "auto_explain.log_nested_statements": "on",
        "auto_explain.log_format": "json",
        "auto_explain.log_level": "notice",
    }
    db.execute("LOAD 'auto_explain'")
    for name, value in settings.items():
        db.execute("SELECT set_config(%s, %s, false)", (name, value))
    db.add_notice_handler(keep)
    try:
        db.execute(query, params).fetchall()
    finally:
        db.remove_notice_handler(keep)
        db.execute("SET auto_explain.log_min_duration = -1")
    plans = [json.loads(n.split("plan:", 1)[1]) for n in notices if "plan:" in n]
    assert plans, notices
    return plans


def test_portal_reads_reach_their_rows_through_indexes(db):
    db.execute(FILLER)
    # part of the filler mirrored (as a partial backfill leaves it), the rest not
    db.execute(
        "SELECT * FROM region_results_mirror_apply(ARRAY("
        "  SELECT r.id FROM region_results r JOIN cross_region_executions x"
        "  ON x.id = r.cross_region_execution_id WHERE x.jobspec_id LIKE 'filler-%'"
        "  ORDER BY x.jobspec_id LIMIT 2000))"
    )
    counts = fetch(
        db,
        "SELECT (SELECT count(*) FROM jobs) AS jobs, "
        "(SELECT count(*) FROM region_results) AS rr, "
        "(SELECT count(*) FROM executions) AS e",
    )[0]
    assert counts["jobs"] >= 5000 and counts["rr"] >= 10000 and counts["e"] >= 50000
    db.execute("ANALYZE")
    target = "filler-4242"
    assert len(shown(db, target)) == 10 + 12  # 10 direct + 2 regions x 2 models x 3 questions

    custom = explain(db, "SELECT * FROM executions_unified WHERE jobspec_id = %(j)s", {"j": target})
    assert seq_scans(custom) == []

    # every portal read (SPEC "Portal reads"): those scoped to a job, a run or an execution
    # read no table whole, in the plans they run (the view's rows of a job or an execution id
    # come through a function whose generic plan each connection keeps); the newest-first
    # list reads only region_results whole (to find the region results not mirrored),
    # executions by index
    some = fetch(
        db,
        "SELECT execution_id, cross_region_execution_id FROM executions_unified "
        "WHERE jobspec_id = %s AND execution_id IS NOT NULL LIMIT 1",
        (target,),
    )[0]
    run = fetch(db, "SELECT id FROM cross_region_executions WHERE jobspec_id = %s", (target,))
    # the list's window, as beaconsql.portal opens it for a page of 20: the newest 20 jobs'
    since = db.execute(portal.queries()["executions_page_since"], {"jobs": 20}).fetchone()[0]
    scoped = {
        "executions": {"jobspec_id": target, "limit": None, "offset": 0},
        "progress_rows": {"jobspec_id": target},
        "cross_region": {"jobspec_id": target, "model_id": "m1"},
        "cross_region_by_question": {"jobspec_id": target, "model_id": "m1", "question_id": "q1"},
        "cross_region_diff": {"jobspec_id": target},
        "execution": {"execution_id": some["execution_id"]},
        "execution_receipt": {"execution_id": some["execution_id"]},
        "execution_bias_score": {"execution_id": some["execution_id"]},
    }
    for name, params in scoped.items():
        plans = executed_plans(db, portal.queries()[name], params)
        views = [p for p in plans if "executions_unified u" in p["Query Text"]]
        assert len(views) == 1, (name, [p["Query Text"] for p in plans])
        assert "$1" in json.dumps(views[0]["Plan"]), name  # the generic plan, kept
        for plan in plans:
            assert seq_scans(plan["Plan"]) == [], (name, plan["Query Text"])
    by_run = "SELECT * FROM executions_unified WHERE cross_region_execution_id = %(run)s"
    assert seq_scans(explain(db, by_run, {"run": run[0]["id"]})) == []
    # the list's stored rows (executions_in_window; the page reads them alike) come from
    # executions by its created_at index, and region_results at most once
    window = {"since": since, "end": 20}
    explained = explain(db, portal.queries()["executions_in_window"], window)
    assert set(seq_scans(explained)) <= {"region_results"}


def test_a_job_run_many_times_is_read_in_calls_linear_in_its_runs(db):
    """A job run 12 times in one region, each run started and finished in one transaction:
    every key has 12 mirrored candidates. Reading the job calls the rule for none of its
    finished, mirrored region results, probes no other region result for derived rows, and asks
    whether a candidate outranks another once per row the view hides, at most. Version 1 of the
    view ran the rule for each (the mirror state's `finished` stays false when a region result
    is started and finished in one transaction) and asked every other candidate of a key:
    here 1,200 calls of the rule, 1,188 probes for derived rows and 693 of candidates; a job
    run 100 times took 171 s to read."""
    runs, pairs = 12, len(seed.MODELS) * len(seed.QUESTIONS)
    spec = seed.jobspec(f"many-runs-{uuid.uuid4().hex[:8]}", regions=("US",))
    job = spec["id"]
    writer.create_job(db, spec)
    for n in range(runs):
        with db.transaction():
            newest = seed.record_with_writer(
                db, spec, started_at=STARTED_AT + timedelta(hours=n), create_job=False
            ).region_result_ids["US"]
    with db.transaction():
        db.execute("SET LOCAL track_functions = 'all'")
        rows = shown(db, job)
        calls = dict(
            db.execute(
                "SELECT funcname, calls FROM pg_stat_xact_user_functions WHERE funcname IN "
                "('region_results_mirror_rows', 'executions_unified_outranks', "
                "'executions_unified_derived_outranks')"
            ).fetchall()
        )
    assert len(rows) == pairs
    assert {(r["source"], r["region_result_id"]) for r in rows} == {("mirrored", newest)}
    assert calls.get("region_results_mirror_rows", 0) == 0, calls
    assert calls.get("executions_unified_derived_outranks", 0) == 0, calls
    assert 0 < calls.get("executions_unified_outranks", 0) <= (runs - 1) * pairs, calls


# --------------------------------------------------------------------------------------------
# Privileges
# --------------------------------------------------------------------------------------------


@pytest.fixture
def reader_role(db: psycopg.Connection[Any]) -> Iterator[str]:
    name = f"bq_view_reader_{uuid.uuid4().hex[:10]}"
    db.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
    yield name
    db.execute("RESET ROLE")
    db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_view_readable_with_select_on_view_and_jobs_only(db, reader_role):
    writer_job = seed.record_with_writer(db, seed.jobspec())
    assert writer_job.job_id is not None
    seed.record_legacy(db, seed.jobspec(seed.LEGACY_JOBSPEC_ID))  # mirrored by the triggers
    with triggers_disabled(db):
        extra = one_pair_job(db)
        region_with_element(db, extra)  # derived: the rule runs on the fly for the role
    db.execute(
        sql.SQL("GRANT SELECT ON executions_unified, jobs TO {}").format(
            sql.Identifier(reader_role)
        )
    )
    expected = {
        j: comparable(shown(db, j))
        for j in (seed.SEED_JOBSPEC_ID, seed.LEGACY_JOBSPEC_ID, extra["jobspec_id"])
    }
    db.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(reader_role)))
    try:
        for jobspec_id, rows in expected.items():
            assert comparable(shown(db, jobspec_id)) == rows
        assert len(expected[seed.SEED_JOBSPEC_ID]) == 18
        assert {r["source"] for r in shown(db, extra["jobspec_id"])} == {"derived"}
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] >= 3
        for table in ("region_results", "executions", "cross_region_executions"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(table)))
    finally:
        db.execute("RESET ROLE")
