"""The mirror: region_results (and jobs, cross_region_executions, direct executions rows)
materialised into executions by the triggers, against the contract (SPEC "Words", "The mirror
rule", "Materialising the rule into executions", "The writer").

Tests that assert the contract where the implementation deviates are marked
``xfail(strict=True)`` with the reason; each carries a minimal repro in its docstring. Tests
whose docstring says "once" guard against a deviation found earlier and since fixed.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from factories import (
    STARTED_AT,
    element,
    make_direct_execution,
    make_job,
    make_region_result,
    make_run,
    unique_jobspec_id,
)
from helpers import run_blocking, wait_blocked_or_done
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import VOCAB, assert_matches_oracle
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from beaconsql import backfill, seed, verify, writer

EXECUTION_STATUSES = {"pending", "running", "completed", "failed", "cancelled"}
FINISHED_AT = STARTED_AT + timedelta(minutes=1)
NAIVE_START = STARTED_AT.replace(tzinfo=None)
NAIVE_FINISH = FINISHED_AT.replace(tzinfo=None)
RUNNER_CANCEL = (
    "UPDATE executions SET status = 'cancelled', completed_at = NOW() "
    "WHERE job_id = %s AND status IN ('pending', 'running', 'processing', 'queued', 'retrying')"
)
MIRROR_COLUMNS = (
    "job_id, cross_region_execution_id, region, provider_id, model_id, question_id, status, "
    "started_at, completed_at, created_at, output_data, receipt_data, original_error"
)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def fetch(conn: psycopg.Connection[Any], query: str, params: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def mirrored(conn: psycopg.Connection[Any], region_result_id: uuid.UUID) -> list[dict[str, Any]]:
    """The executions rows linked to a region result, by pair."""
    return fetch(
        conn,
        "SELECT * FROM executions WHERE mirror_region_result_id = %s "
        "ORDER BY model_id, question_id",
        (region_result_id,),
    )


def shown_pairs(
    conn: psycopg.Connection[Any], region_result_id: uuid.UUID
) -> dict[tuple[str, str], tuple[Any, ...]]:
    """{(model_id, question_id): (status, original_error, evidence)} of what executions_unified
    shows for a region result: its stored rows, and the placeholders the view derives while it
    is unfinished (one row per pair is asserted)."""
    rows = fetch(
        conn,
        "SELECT model_id, question_id, status, original_error, evidence "
        "FROM executions_unified WHERE region_result_id = %s",
        (region_result_id,),
    )
    out = {
        (r["model_id"], r["question_id"]): (r["status"], r["original_error"], r["evidence"])
        for r in rows
    }
    assert len(out) == len(rows)
    return out


def pairs(
    conn: psycopg.Connection[Any], region_result_id: uuid.UUID
) -> dict[tuple[str, str], tuple[Any, ...]]:
    """The same for the executions rows the mirror stores for a region result."""
    rows = mirrored(conn, region_result_id)
    out = {
        (r["model_id"], r["question_id"]): (r["status"], r["original_error"], r["mirror_evidence"])
        for r in rows
    }
    assert len(out) == len(rows)
    return out


def job_rows(conn: psycopg.Connection[Any], job_id: int) -> list[dict[str, Any]]:
    """Every executions row of a job, the runner's naive read (no view)."""
    return fetch(
        conn,
        "SELECT * FROM executions WHERE job_id = %s ORDER BY region, model_id, question_id, id",
        (job_id,),
    )


def keys_of(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(r["region"], r["model_id"], r["question_id"]) for r in rows]


def assert_one_row_per_key(conn: psycopg.Connection[Any], job_id: int) -> list[dict[str, Any]]:
    rows = job_rows(conn, job_id)
    keys = keys_of(rows)
    assert len(keys) == len(set(keys)), f"duplicate keys: {sorted(keys)}"
    return rows


def anomaly_kinds(conn: psycopg.Connection[Any], region_result_id: uuid.UUID) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT kind FROM region_results_mirror_anomalies WHERE region_result_id = %s "
            "ORDER BY kind, detail",
            (region_result_id,),
        ).fetchall()
    ]


def executions_xmins(conn: psycopg.Connection[Any]) -> dict[int, str]:
    return dict(conn.execute("SELECT id, xmin::text FROM executions").fetchall())


def sequence_state(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute("SELECT last_value, is_called FROM executions_id_seq").fetchone()
    assert row is not None
    return tuple(row)


def apply(conn: psycopg.Connection[Any], region_result_id: uuid.UUID) -> dict[str, int]:
    rows = fetch(
        conn, "SELECT * FROM region_results_mirror_apply(ARRAY[%s]::uuid[])", (region_result_id,)
    )
    assert len(rows) == 1
    return rows[0]


def region_exists(conn: psycopg.Connection[Any], region_result_id: uuid.UUID) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM region_results WHERE id = %s", (region_result_id,)
    ).fetchone()
    return row == (1,)


def small_spec(
    models: Any = ("m1", "m2"), questions: Any = ("q1",), regions: Any = ("US",)
) -> dict[str, Any]:
    spec = seed.jobspec(unique_jobspec_id(), regions=list(regions), models=["m1"], questions=["q1"])
    spec["metadata"]["models"] = list(models) if isinstance(models, tuple) else models
    spec["metadata"]["model"] = models[0] if isinstance(models, tuple) and models else "m1"
    spec["questions"] = list(questions) if isinstance(questions, tuple) else questions
    return spec


def job_and_run(
    conn: psycopg.Connection[Any], spec: dict[str, Any] | None = None, **spec_kwargs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = spec if spec is not None else small_spec(**spec_kwargs)
    job = make_job(conn, jobspec_id=spec["id"], jobspec_data=spec)
    run = make_run(conn, jobspec_id=job["jobspec_id"])
    return job, run


def writer_region(
    conn: psycopg.Connection[Any], spec: dict[str, Any], region: str = "US"
) -> tuple[int, uuid.UUID, uuid.UUID]:
    """A job recorded through the writer with one started region; returns (job id, run id,
    region result id)."""
    job_id = writer.create_job(conn, spec)
    run_id = writer.start_run(conn, spec["id"], regions=[region], started_at=STARTED_AT)
    region_id = writer.start_region(
        conn, run_id, region, provider_id=seed.PROVIDERS[region], started_at=STARTED_AT
    )
    return job_id, run_id, region_id


def record(
    conn: psycopg.Connection[Any],
    region_id: uuid.UUID,
    model_id: str,
    question_id: str,
    status: str = "completed",
    **kwargs: Any,
) -> None:
    kwargs.setdefault("started_at", STARTED_AT)
    kwargs.setdefault("completed_at", STARTED_AT + timedelta(seconds=3))
    if status == "completed":
        kwargs.setdefault("output", {"response": f"answer {model_id}/{question_id}"})
    writer.record_pair(
        conn, region_id, model_id=model_id, question_id=question_id, status=status, **kwargs
    )


def record_running(
    conn: psycopg.Connection[Any], region_id: uuid.UUID, *pairs_: tuple[str, str]
) -> None:
    """Record each pair running (the writer at a pair's start): rows the mirror stores."""
    for model_id, question_id in pairs_:
        record(conn, region_id, model_id, question_id, "running", completed_at=None)


def tx_connection(connect: Callable[..., psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
    conn = connect(autocommit=False)
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    return conn


# --------------------------------------------------------------------------------------------
# Follows its inputs: UPDATE and DELETE of a region result, DELETE of a run
# --------------------------------------------------------------------------------------------


def test_region_results_mirror_update_pair_changes_status(db):
    spec = small_spec(models=("m1", "m2"), questions=("q1",))
    _, _, rid = writer_region(db, spec)
    # A running region stores nothing yet: the view derives its placeholders.
    assert pairs(db, rid) == {}
    assert shown_pairs(db, rid) == {
        ("m1", "q1"): ("running", None, 1),
        ("m2", "q1"): ("running", None, 1),
    }

    record(db, rid, "m1", "q1", "completed")
    assert pairs(db, rid) == {("m1", "q1"): ("completed", None, 3)}
    row = mirrored(db, rid)[0]
    assert row["output_data"] == {"response": "answer m1/q1"}
    assert (row["started_at"], row["completed_at"], row["created_at"]) == (
        NAIVE_START,
        NAIVE_START + timedelta(seconds=3),
        NAIVE_START,
    )

    # The writer replaces the pair's element: the same row follows, now failed.
    before = {r["model_id"]: r["id"] for r in mirrored(db, rid)}
    record(
        db,
        rid,
        "m1",
        "q1",
        "failed",
        error="timeout after 300s",
        completed_at=STARTED_AT + timedelta(seconds=9),
    )
    rows = mirrored(db, rid)
    assert {r["model_id"]: r["id"] for r in rows} == before
    m1 = rows[0]
    assert (m1["status"], m1["original_error"], m1["output_data"], m1["completed_at"]) == (
        "failed",
        "timeout after 300s",
        None,
        NAIVE_START + timedelta(seconds=9),
    )
    assert shown_pairs(db, rid)[("m2", "q1")] == ("running", None, 1)


def test_region_results_mirror_update_pair_disappears_from_elements(db):
    job, run = job_and_run(db, models=("m1", "m2"), questions=("q1",))
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        status="success",
        completed_at=FINISHED_AT,
        error_message="",
        execution_output={"executions": [element("m1", "q1"), element("extra", "q9")]},
    )
    assert pairs(db, rr["id"]) == {
        ("extra", "q9"): ("completed", None, 3),  # outside models x questions: still mirrored
        ("m1", "q1"): ("completed", None, 3),
        ("m2", "q1"): ("failed", "no result recorded", 1),
    }
    db.execute(
        "UPDATE region_results SET execution_output = %s WHERE id = %s",
        (Jsonb({"executions": [element("m2", "q1")]}), rr["id"]),
    )
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("failed", "no result recorded", 1),
        ("m2", "q1"): ("completed", None, 3),
    }
    assert len(job_rows(db, job["id"])) == 2


def test_region_results_mirror_update_pair_appears(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        execution_output={"executions": [element("m1", "q1")]},
    )
    assert pairs(db, rr["id"]) == {("m1", "q1"): ("completed", None, 3)}
    db.execute(
        "UPDATE region_results SET execution_output = jsonb_set(execution_output, "
        "'{executions}', (execution_output -> 'executions') || %s) WHERE id = %s",
        (Jsonb([element("m2", "q7", "running", completed_at=None, output=None)]), rr["id"]),
    )
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m2", "q7"): ("running", None, 3),
    }
    new = next(r for r in mirrored(db, rr["id"]) if r["model_id"] == "m2")
    assert (new["job_id"], new["region"], new["provider_id"], new["completed_at"]) == (
        job["id"],
        "US",
        "modal-us-east",
        None,
    )


def test_region_results_mirror_delete_removes_its_rows_only(db):
    run = seed.record_with_writer(db, seed.jobspec())
    us, eu = run.region_result_ids["US"], run.region_result_ids["EU"]
    assert len(mirrored(db, us)) == len(mirrored(db, eu)) == 9
    db.execute("DELETE FROM region_results WHERE id = %s", (us,))
    assert mirrored(db, us) == []
    assert len(mirrored(db, eu)) == 9
    assert {r["region"] for r in job_rows(db, run.job_id)} == {"EU"}
    assert db.execute(
        "SELECT count(*) FROM region_results_mirror_state WHERE region_result_id = %s", (us,)
    ).fetchone() == (0,)


def test_region_results_mirror_update_moved_to_another_run_follows(db):
    job_a, run_a = job_and_run(db, models=("m1",), questions=("q1",))
    job_b, run_b = job_and_run(db, models=("m2",), questions=("q1",))
    rr = make_region_result(
        db,
        cross_region_execution_id=run_a["id"],
        execution_output={"executions": [element("m2", "q1")]},
    )
    assert pairs(db, rr["id"]) == {("m2", "q1"): ("completed", None, 3)}
    assert shown_pairs(db, rr["id"])[("m1", "q1")] == ("running", None, 1)  # a placeholder
    db.execute(
        "UPDATE region_results SET cross_region_execution_id = %s, region = 'EU' WHERE id = %s",
        (run_b["id"], rr["id"]),
    )
    assert pairs(db, rr["id"]) == {("m2", "q1"): ("completed", None, 3)}
    assert job_rows(db, job_a["id"]) == []
    assert [(r["region"], r["cross_region_execution_id"]) for r in job_rows(db, job_b["id"])] == [
        ("EU", run_b["id"])
    ]


def test_cross_region_executions_mirror_delete_run_removes_mirrored_rows(db):
    run = seed.record_with_writer(db, seed.jobspec())
    direct = make_direct_execution(
        db, job_id=run.job_id, region="ASIA", model_id="m9", question_id="q9"
    )
    assert len(job_rows(db, run.job_id)) == 19
    db.execute("DELETE FROM cross_region_executions WHERE id = %s", (run.run_id,))
    assert db.execute(
        "SELECT count(*) FROM region_results WHERE cross_region_execution_id = %s", (run.run_id,)
    ).fetchone() == (0,)
    assert [r["id"] for r in job_rows(db, run.job_id)] == [direct["id"]]
    assert db.execute(
        "SELECT count(*) FROM executions WHERE mirror_region_result_id IS NOT NULL"
    ).fetchone() == (0,)


# --------------------------------------------------------------------------------------------
# The legacy format: the runner's own region rows
# --------------------------------------------------------------------------------------------


def test_region_results_mirror_legacy_worked_example_attributes_two_answers(db):
    spec = seed.jobspec(seed.LEGACY_JOBSPEC_ID)
    run = seed.record_legacy(db, spec)
    rows = assert_one_row_per_key(db, run.job_id)
    assert len(rows) == 18
    completed = [r for r in rows if r["status"] == "completed"]
    assert keys_of(completed) == [
        ("EU", "llama3.2-1b", "greatest_invention"),
        ("US", "llama3.2-1b", "greatest_invention"),
    ]
    for r in completed:
        assert r["mirror_evidence"] == 2
        assert r["output_data"] == seed.answer("llama3.2-1b", "greatest_invention", r["region"])
        assert r["receipt_data"] is None and r["original_error"] is None
    failed = [r for r in rows if r["status"] != "completed"]
    assert len(failed) == 16
    assert {(r["status"], r["original_error"], r["mirror_evidence"]) for r in failed} == {
        ("failed", "no result recorded", 1)
    }
    assert {r["output_data"] is None for r in failed} == {True}
    # Times: the region's, naive UTC; US started 17:00, EU one minute later, 45 s each.
    us = next(r for r in rows if r["region"] == "US")
    eu = next(r for r in rows if r["region"] == "EU")
    assert (us["started_at"], us["completed_at"], us["created_at"]) == (
        NAIVE_START,
        NAIVE_START + timedelta(seconds=45),
        NAIVE_START,
    )
    assert eu["started_at"] == NAIVE_START + timedelta(minutes=1)
    assert {r["provider_id"] for r in rows if r["region"] == "EU"} == {"modal-eu-west"}
    assert {r["cross_region_execution_id"] for r in rows} == {run.run_id}
    for rid in run.region_result_ids.values():
        assert anomaly_kinds(db, rid) == []


@pytest.mark.parametrize(
    ("data_model", "expected_model"),
    [("mistral-7b", "mistral-7b"), ("gpt-4o", "llama3.2-1b"), (None, "llama3.2-1b")],
)
def test_region_results_mirror_legacy_answer_model_from_data_metadata(
    db, data_model, expected_model
):
    job, run = job_and_run(db, spec=seed.jobspec(unique_jobspec_id(), regions=["US"]))
    data: dict[str, Any] = {"response": "the one answer"}
    if data_model is not None:
        data["metadata"] = {"model": data_model}
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        status="success",
        completed_at=FINISHED_AT,
        error_message="",
        execution_output={"data": data, "hash": ""},
    )
    got = pairs(db, rr["id"])
    assert len(got) == 9
    assert {k: v for k, v in got.items() if v[0] == "completed"} == {
        (expected_model, "greatest_invention"): ("completed", None, 2)
    }
    answer_row = next(r for r in mirrored(db, rr["id"]) if r["status"] == "completed")
    assert answer_row["output_data"] == data
    assert anomaly_kinds(db, rr["id"]) == []


def test_region_results_mirror_legacy_failed_region_carries_error_message(db):
    job, run = job_and_run(db, spec=seed.jobspec(unique_jobspec_id(), regions=["US"]))
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        status="failed",
        completed_at=FINISHED_AT,
        execution_output=None,
        error_message="all executions failed",
        metadata={
            "success_count": 0,
            "failure_count": 9,
            "total_executions": 9,
            "plan_priority": 0,
        },
    )
    got = pairs(db, rr["id"])
    assert len(got) == 9
    assert set(got.values()) == {("failed", "all executions failed", 1)}
    assert {(r["completed_at"], r["output_data"]) for r in mirrored(db, rr["id"])} == {
        (NAIVE_FINISH, None)
    }


def test_region_results_mirror_legacy_cancelled_region_yields_cancelled_pairs(db):
    job, run = job_and_run(db, spec=seed.jobspec(unique_jobspec_id(), regions=["US"]))
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        status="cancelled",
        completed_at=FINISHED_AT,
        error_message="",
        execution_output={
            "data": seed.answer("llama3.2-1b", "greatest_invention", "US"),
            "hash": "",
        },
    )
    got = pairs(db, rr["id"])
    assert got.pop(("llama3.2-1b", "greatest_invention")) == ("completed", None, 2)
    assert len(got) == 8
    assert set(got.values()) == {("cancelled", "no result recorded", 1)}


def test_region_results_mirror_running_region_yields_running_pairs_without_completed_at(db):
    job, run = job_and_run(db, models=("m1", "m2"), questions=("q1", "q2"))
    rr = make_region_result(db, cross_region_execution_id=run["id"], status="running")
    assert mirrored(db, rr["id"]) == []  # placeholders: derived by the view, never stored
    rows = fetch(db, "SELECT * FROM executions_unified WHERE region_result_id = %s", (rr["id"],))
    assert len(rows) == 4
    assert {
        (r["source"], r["status"], r["completed_at"], r["original_error"], r["evidence"])
        for r in rows
    } == {("derived", "running", None, None, 1)}
    db.execute("UPDATE region_results SET status = 'QUEUED' WHERE id = %s", (rr["id"],))
    assert {v[0] for v in shown_pairs(db, rr["id"]).values()} == {"pending"}


# --------------------------------------------------------------------------------------------
# Direct rows own their key
# --------------------------------------------------------------------------------------------


def runner_region(
    conn: psycopg.Connection[Any],
    job: dict[str, Any],
    run: dict[str, Any],
    region: str,
    spec: dict[str, Any],
    direct_pairs: int,
) -> uuid.UUID:
    """The runner's own way for one region (runner-app.md 2.3, 2.4): INSERT the region result
    running, one direct executions row per finished pair (the first *direct_pairs* in
    model-major order), then the final UPDATE (success, legacy data, counts)."""
    start = STARTED_AT + timedelta(minutes=5 if region == "EU" else 0)
    rr = make_region_result(
        conn,
        cross_region_execution_id=run["id"],
        region=region,
        provider_id=seed.PROVIDERS[region],
        status="running",
        started_at=start,
    )
    order = [(m, q) for m in spec["metadata"]["models"] for q in spec["questions"]]
    for k, (m, q) in enumerate(order[:direct_pairs]):
        make_direct_execution(
            conn,
            job_id=job["id"],
            region=region,
            model_id=m,
            question_id=q,
            provider_id=seed.PROVIDERS[region],
            started_at=start.replace(tzinfo=None),
            completed_at=start.replace(tzinfo=None) + timedelta(seconds=k + 1),
            created_at=start.replace(tzinfo=None),
        )
    conn.execute(
        "UPDATE region_results SET status = 'success', completed_at = %s, duration_ms = 60000, "
        "execution_output = %s, error_message = '', metadata = %s WHERE id = %s",
        (
            start + timedelta(minutes=1),
            Jsonb({"data": seed.answer(order[0][0], order[0][1], region), "hash": ""}),
            Jsonb(
                {
                    "success_count": direct_pairs,
                    "failure_count": len(order) - direct_pairs,
                    "total_executions": len(order),
                    "plan_priority": 0,
                }
            ),
            rr["id"],
        ),
    )
    return rr["id"]


def test_executions_mirror_claim_runner_18_direct_rows_leave_no_mirrored_row(db):
    spec = seed.jobspec(unique_jobspec_id())
    job, run = job_and_run(db, spec=spec)
    ids = [runner_region(db, job, run, region, spec, 9) for region in ("US", "EU")]
    rows = assert_one_row_per_key(db, job["id"])
    assert len(rows) == 18
    assert {r["mirror_region_result_id"] for r in rows} == {None}
    assert {r["mirror_evidence"] for r in rows} == {None}
    assert db.execute(
        "SELECT count(*) FROM executions WHERE mirror_region_result_id = ANY(%s)", (ids,)
    ).fetchone() == (0,)


def test_executions_mirror_claim_region_timed_out_after_4_direct_rows_gets_5_failed(db):
    spec = seed.jobspec(unique_jobspec_id(), regions=["US"])
    job, run = job_and_run(db, spec=spec)
    rid = runner_region(db, job, run, "US", spec, 4)
    rows = assert_one_row_per_key(db, job["id"])
    assert len(rows) == 9
    direct = [r for r in rows if r["mirror_region_result_id"] is None]
    assert keys_of(direct) == sorted(
        [("US", "llama3.2-1b", q) for q in seed.QUESTIONS]
        + [("US", "mistral-7b", "greatest_invention")]
    )
    assert {r["status"] for r in direct} == {"completed"}
    got = pairs(db, rid)
    assert set(got) == {
        ("mistral-7b", "taiwan_status"),
        ("mistral-7b", "tiananmen_neutral"),
        ("qwen2.5-1.5b", "greatest_invention"),
        ("qwen2.5-1.5b", "taiwan_status"),
        ("qwen2.5-1.5b", "tiananmen_neutral"),
    }
    assert set(got.values()) == {("failed", "no result recorded", 1)}
    assert {r["completed_at"] for r in mirrored(db, rid)} == {NAIVE_START + timedelta(minutes=1)}
    # Re-applying leaves the 4 direct keys to the runner and writes nothing.
    seq, xmins = sequence_state(db), executions_xmins(db)
    assert apply(db, rid) == {
        "inserted": 0,
        "updated": 0,
        "deleted": 0,
        "detached": 0,
        "left_to_direct": 4,
        "anomalies": 0,
        "states": 0,
        "deferred": 0,
    }
    assert (sequence_state(db), executions_xmins(db)) == (seq, xmins)


def test_executions_mirror_claim_direct_row_after_mirror_removes_mirrored_row(db):
    spec = small_spec(models=("m1", "m2"), questions=("q1", "q2"))
    job_id, _, rid = writer_region(db, spec)
    for m in ("m1", "m2"):
        for q in ("q1", "q2"):
            record(db, rid, m, q)
    assert len(mirrored(db, rid)) == 4
    direct = make_direct_execution(
        db, job_id=job_id, model_id="m2", question_id="q1", output_data={"response": "runner's own"}
    )
    rows = assert_one_row_per_key(db, job_id)
    assert len(rows) == 4
    assert set(pairs(db, rid)) == {("m1", "q1"), ("m1", "q2"), ("m2", "q2")}
    owner = next(r for r in rows if (r["model_id"], r["question_id"]) == ("m2", "q1"))
    assert owner["id"] == direct["id"]
    # A later region update (finish) does not bring the mirrored row back.
    writer.finish_region(db, rid, completed_at=FINISHED_AT)
    assert len(assert_one_row_per_key(db, job_id)) == 4
    assert set(pairs(db, rid)) == {("m1", "q1"), ("m1", "q2"), ("m2", "q2")}


def test_executions_mirror_claim_deleting_last_direct_row_gives_key_back(db):
    spec = small_spec(models=("m1",), questions=("q1", "q2"))
    job_id, _, rid = writer_region(db, spec)
    direct = make_direct_execution(db, job_id=job_id, model_id="m1", question_id="q1")
    record(db, rid, "m1", "q1")
    record(db, rid, "m1", "q2")
    assert set(pairs(db, rid)) == {("m1", "q2")}
    db.execute("DELETE FROM executions WHERE id = %s", (direct["id"],))
    assert pairs(db, rid) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m1", "q2"): ("completed", None, 3),
    }
    back = next(r for r in mirrored(db, rid) if r["question_id"] == "q1")
    assert back["output_data"] == {"response": "answer m1/q1"}
    assert len(assert_one_row_per_key(db, job_id)) == 2


def test_executions_mirror_claim_deleting_one_of_two_duplicates_keeps_key_direct(db):
    spec = small_spec(models=("m1",), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    first = make_direct_execution(db, job_id=job_id, model_id="m1", question_id="q1")
    second = make_direct_execution(db, job_id=job_id, model_id="m1", question_id="q1")
    record(db, rid, "m1", "q1")
    assert pairs(db, rid) == {}
    db.execute("DELETE FROM executions WHERE id = %s", (first["id"],))
    assert pairs(db, rid) == {}
    assert [r["id"] for r in job_rows(db, job_id)] == [second["id"]]
    db.execute("DELETE FROM executions WHERE id = %s", (second["id"],))
    assert pairs(db, rid) == {("m1", "q1"): ("completed", None, 3)}


def test_executions_mirror_claim_direct_row_without_question_id_owns_no_mirrored_key(db):
    # A direct row with NULL/'' question_id has the key (…, NULL): the rule never yields it.
    spec = small_spec(models=("m1",), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    make_direct_execution(db, job_id=job_id, model_id="m1", question_id=None)
    make_direct_execution(db, job_id=job_id, model_id="m1", question_id="")
    record(db, rid, "m1", "q1")
    assert pairs(db, rid) == {("m1", "q1"): ("completed", None, 3)}


def test_region_results_mirror_two_runs_of_one_job_each_keep_their_row(db):
    spec = small_spec(models=("m1",), questions=("q1",))
    job, _ = job_and_run(db, spec=spec)
    run2 = make_run(db, jobspec_id=job["jobspec_id"])
    run3 = make_run(db, jobspec_id=job["jobspec_id"])
    a = make_region_result(
        db,
        cross_region_execution_id=run2["id"],
        execution_output={"executions": [element("m1", "q1")]},
    )
    b = make_region_result(
        db,
        cross_region_execution_id=run3["id"],
        execution_output={"executions": [element("m1", "q1", "failed")]},
    )
    assert pairs(db, a["id"]) == {("m1", "q1"): ("completed", None, 3)}
    assert pairs(db, b["id"]) == {("m1", "q1"): ("failed", None, 3)}
    assert len(job_rows(db, job["id"])) == 2


# --------------------------------------------------------------------------------------------
# Races: two connections, READ COMMITTED, both orders
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first_side", ["direct_insert", "region_update"])
def test_executions_mirror_claim_race_direct_insert_vs_region_update(db, connect, first_side):
    spec = small_spec(models=("m1", "m2"), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    a, b = tx_connection(connect), tx_connection(connect)

    def direct_insert(conn: psycopg.Connection[Any]) -> Callable[[], Any]:
        return lambda: make_direct_execution(
            conn, job_id=job_id, model_id="m1", question_id="q1", output_data={"response": "runner"}
        )

    def region_update(conn: psycopg.Connection[Any]) -> Callable[[], Any]:
        return lambda: record(conn, rid, "m1", "q1", "completed")

    if first_side == "direct_insert":
        run_blocking(db, a, b, direct_insert(a), region_update(b))
    else:
        run_blocking(db, a, b, region_update(a), direct_insert(b))

    rows = assert_one_row_per_key(db, job_id)
    assert len(rows) == 1  # m2's placeholder is derived, not stored
    owner = next(r for r in rows if r["model_id"] == "m1")
    assert (owner["mirror_region_result_id"], owner["output_data"]) == (
        None,
        {"response": "runner"},
    )
    assert pairs(db, rid) == {}
    assert shown_pairs(db, rid) == {("m2", "q1"): ("running", None, 1)}
    # The element was recorded all the same; the view-free state is consistent on re-apply.
    counts = apply(db, rid)
    assert (counts["inserted"], counts["updated"], counts["deleted"]) == (0, 0, 0)


@pytest.mark.parametrize("first_side", ["direct_insert", "region_insert"])
def test_executions_mirror_claim_race_direct_insert_vs_region_insert(db, connect, first_side):
    """A direct insert racing the INSERT of the (job, region)'s first region result, either
    order, converges to the direct row alone (once failed: the claim listed the region
    results before taking the lock, and took none when there was no region result yet)."""
    spec = small_spec(models=("m1",), questions=("q1",))
    job, run = job_and_run(db, spec=spec)
    a, b = tx_connection(connect), tx_connection(connect)

    def direct_insert(conn: psycopg.Connection[Any]) -> Callable[[], Any]:
        return lambda: make_direct_execution(
            conn, job_id=job["id"], model_id="m1", question_id="q1"
        )

    def region_insert(conn: psycopg.Connection[Any]) -> Callable[[], Any]:
        return lambda: make_region_result(conn, cross_region_execution_id=run["id"])

    if first_side == "direct_insert":
        run_blocking(db, a, b, direct_insert(a), region_insert(b))
    else:
        run_blocking(db, a, b, region_insert(a), direct_insert(b))
    rows = assert_one_row_per_key(db, job["id"])
    assert [r["mirror_region_result_id"] for r in rows] == [None]


@pytest.mark.parametrize("first_pair", ["m1", "m2"])
def test_region_results_mirror_race_record_pair_vs_record_pair(db, connect, first_pair):
    spec = small_spec(models=("m1", "m2"), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    second_pair = "m2" if first_pair == "m1" else "m1"
    a, b = tx_connection(connect), tx_connection(connect)
    run_blocking(
        db,
        a,
        b,
        lambda: record(a, rid, first_pair, "q1", "completed"),
        lambda: record(b, rid, second_pair, "q1", "failed", error="boom"),
    )
    elements = db.execute(
        "SELECT execution_output -> 'executions' FROM region_results WHERE id = %s", (rid,)
    ).fetchone()[0]
    assert [e["model_id"] for e in elements] == [first_pair, second_pair]
    assert len(assert_one_row_per_key(db, job_id)) == 2
    assert pairs(db, rid) == {
        (first_pair, "q1"): ("completed", None, 3),
        (second_pair, "q1"): ("failed", "boom", 3),
    }
    counts = apply(db, rid)
    assert (counts["inserted"], counts["updated"], counts["deleted"]) == (0, 0, 0)


@pytest.mark.parametrize("first_side", ["direct_delete", "region_update"])
def test_executions_mirror_claim_race_last_direct_delete_vs_region_update(db, connect, first_side):
    spec = small_spec(models=("m1", "m2"), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    direct = make_direct_execution(db, job_id=job_id, model_id="m1", question_id="q1")
    assert pairs(db, rid) == {} and set(shown_pairs(db, rid)) == {("m2", "q1")}
    a, b = tx_connection(connect), tx_connection(connect)

    def direct_delete(conn: psycopg.Connection[Any]) -> Callable[[], Any]:
        return lambda: conn.execute("DELETE FROM executions WHERE id = %s", (direct["id"],))

    def region_update(conn: psycopg.Connection[Any]) -> Callable[[], Any]:
        return lambda: record(conn, rid, "m1", "q1", "failed", error="late")

    if first_side == "direct_delete":
        run_blocking(db, a, b, direct_delete(a), region_update(b))
    else:
        run_blocking(db, a, b, region_update(a), direct_delete(b))
    rows = assert_one_row_per_key(db, job_id)
    assert len(rows) == 1
    # The key went back to the mirror, which stores the element recorded meanwhile.
    assert pairs(db, rid) == {("m1", "q1"): ("failed", "late", 3)}
    assert shown_pairs(db, rid)[("m2", "q1")] == ("running", None, 1)


def locked_execution_ids(conn: psycopg.Connection[Any], job_id: int) -> set[int]:
    """Ids of the job's executions rows some other transaction holds a row lock on."""
    with conn.transaction():
        free = {
            r[0]
            for r in conn.execute(
                "SELECT id FROM executions WHERE job_id = %s FOR UPDATE SKIP LOCKED", (job_id,)
            )
        }
        every = {
            r[0] for r in conn.execute("SELECT id FROM executions WHERE job_id = %s", (job_id,))
        }
        raise psycopg.Rollback()
    return every - free


def test_executions_mirror_claim_runner_cancel_racing_record_pair_reaches_no_deadlock(db, connect):
    """The runner's cancel holding executions row locks while a writer's record_pair needs one
    of them (READ COMMITTED; 4 running mirrored rows, heap order US m1, US m2, EU m1, EU m2):
    W1: BEGIN; record_pair(EU, m2)                -- holds the row lock of EU m2
    R:  the runner's cancel (seq scan)            -- locks US m1, US m2, EU m1, waits for EU m2
    W2: BEGIN; record_pair(US, m1)                -- needs US m1, held by R
    W1: COMMIT                                    -- R finishes; its trigger needs (J, US)
    Once a deadlock (the mirror took its lock before the row locks). Now the mirror never
    waits for a row another statement holds beyond a moment: W2 defers US m1 (US is left not
    mirrored, for a backfill) and commits; the runner's cancel wins, and nothing aborts."""
    spec = small_spec(models=("m1", "m2"), questions=("q1",), regions=("US", "EU"))
    job_id = writer.create_job(db, spec)
    run_id = writer.start_run(db, spec["id"], regions=["US", "EU"], started_at=STARTED_AT)
    us = writer.start_region(db, run_id, "US", started_at=STARTED_AT)
    eu = writer.start_region(db, run_id, "EU", started_at=STARTED_AT)
    record_running(db, us, ("m1", "q1"), ("m2", "q1"))
    record_running(db, eu, ("m1", "q1"), ("m2", "q1"))
    ids = {(r["region"], r["model_id"]): r["id"] for r in job_rows(db, job_id)}
    w1, w2 = tx_connection(connect), tx_connection(connect)
    runner = connect()  # autocommit: each runner statement is its own transaction
    # Planner settings only (not a mirror switch): the cancel visits rows in heap order.
    runner.execute("SET enable_indexscan = off")
    runner.execute("SET enable_bitmapscan = off")
    observer = connect(autocommit=False)
    errors: list[BaseException] = []

    def cancel() -> None:
        try:
            runner.execute(RUNNER_CANCEL, (job_id,))
        except BaseException as exc:
            errors.append(exc)

    def record_us() -> None:
        try:
            record(w2, us, "m1", "q1")
            w2.commit()
        except BaseException as exc:
            errors.append(exc)
            w2.rollback()

    record(w1, eu, "m2", "q1")
    t_cancel = threading.Thread(target=cancel)
    t_cancel.start()
    wait_blocked_or_done(db, runner.info.backend_pid, t_cancel)
    # Precondition: the cancel holds US m1 while it waits for W1's row.
    assert ids[("US", "m1")] in locked_execution_ids(observer, job_id)
    t_record = threading.Thread(target=record_us)
    t_record.start()
    wait_blocked_or_done(db, w2.info.backend_pid, t_record)
    w1.commit()
    t_cancel.join(30)
    t_record.join(30)
    assert not t_cancel.is_alive() and not t_record.is_alive()
    if errors:
        raise errors[0]
    rows = assert_one_row_per_key(db, job_id)
    assert len(rows) == 4
    by_key = {(r["region"], r["model_id"]): r for r in rows}
    assert (by_key[("EU", "m2")]["status"], by_key[("EU", "m2")]["mirror_region_result_id"]) == (
        "completed",
        eu,
    )
    assert {
        (by_key[k]["status"], by_key[k]["mirror_region_result_id"])
        for k in [("US", "m2"), ("EU", "m1")]
    } == {("cancelled", None)}
    # The cancel ran first: US m1 is the runner's (cancelled, detached), not reverted.
    assert (by_key[("US", "m1")]["status"], by_key[("US", "m1")]["mirror_region_result_id"]) == (
        "cancelled",
        None,
    )
    # W2's write to US m1 was deferred: a backfill finds nothing left to do but the state.
    assert backfill.backfill(db).changed == 0
    assert verify.verify(db).exit_code == 0


def test_executions_mirror_claim_runner_cancel_racing_two_pair_writer_transaction(db, connect):
    """READ COMMITTED; region US with running mirrored rows r1 = (m1, q1) and r2 = (m2, q1);
    r1 touched by an update of a column the mirror does not own, so that in heap order r2
    comes first:
    W: BEGIN; record_pair(US, m1, completed)     -- the mirror updates r1: W holds r1
    R: UPDATE executions SET status = 'cancelled', completed_at = NOW() WHERE job_id = J AND
       status IN ('pending', 'running', ...)      -- (seq scan) locks r2, waits for r1
    W: record_pair(US, m2, completed)             -- the mirror needs r2, held by R
    Once a deadlock, raised in R (the runner's cancel rolled back). Now the mirror does not
    wait for r2 beyond a moment: it defers it (US not mirrored, for a backfill), W commits, the
    cancel then cancels r2 and leaves r1, completed by then."""
    spec = small_spec(models=("m1", "m2"), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    record_running(db, rid, ("m1", "q1"), ("m2", "q1"))
    db.execute(
        "UPDATE executions SET is_substantive = false WHERE job_id = %s AND model_id = 'm1'",
        (job_id,),
    )
    ids = {r["model_id"]: r["id"] for r in mirrored(db, rid)}
    assert [
        r[0]
        for r in db.execute("SELECT id FROM executions WHERE job_id = %s ORDER BY ctid", (job_id,))
    ] == [ids["m2"], ids["m1"]]
    w = tx_connection(connect)
    runner = connect()  # autocommit, as the runner's statements are
    # Planner settings only (not a mirror switch): the cancel visits rows in heap order.
    runner.execute("SET enable_indexscan = off")
    runner.execute("SET enable_bitmapscan = off")
    observer = connect(autocommit=False)
    errors: list[BaseException] = []

    def cancel() -> None:
        try:
            runner.execute(RUNNER_CANCEL, (job_id,))
        except BaseException as exc:
            errors.append(exc)

    record(w, rid, "m1", "q1")
    t_cancel = threading.Thread(target=cancel)
    t_cancel.start()
    wait_blocked_or_done(db, runner.info.backend_pid, t_cancel)
    assert ids["m2"] in locked_execution_ids(observer, job_id)  # the cancel holds r2
    try:
        record(w, rid, "m2", "q1")
        w.commit()
    except BaseException as exc:
        errors.append(exc)
        w.rollback()
    t_cancel.join(30)
    assert not t_cancel.is_alive()
    if errors:
        raise errors[0]
    # The cancel waited for W's transaction: r1 completed and mirrored, r2 the runner's.
    assert pairs(db, rid) == {("m1", "q1"): ("completed", None, 3)}
    r2 = fetch(db, "SELECT * FROM executions WHERE id = %s", (ids["m2"],))[0]
    assert (r2["status"], r2["mirror_region_result_id"]) == ("cancelled", None)
    assert backfill.backfill(db).complete
    assert verify.verify(db).exit_code == 0


def test_region_results_mirror_finish_region_racing_runner_cancel_reaches_no_deadlock(db, connect):
    """Repro (READ COMMITTED; region US started by the writer: running mirrored rows r1, r2, r3
    in id order; r1 touched by an update of a column the mirror does not own, so that heap
    order is r2, r3, r1; a third session C holds r3, which only pins the interleaving that a
    large region reaches by timing):
    C: BEGIN; SELECT 1 FROM executions WHERE id = r3 FOR UPDATE;
    R: UPDATE executions SET status = 'cancelled', completed_at = NOW() WHERE job_id = J AND
       status IN ('pending', 'running', ...)      -- (seq scan) locks r2, waits for r3
    W: finish_region(US)                          -- the mirror locks r1, waits for r2 (R)
    C: COMMIT                                     -- R moves on to r1, held by W
    Once a deadlock, raised in W (the writer's finish_region). Now the mirror takes r1 but
    does not wait for r2 beyond a moment: it defers the region (not mirrored, for a backfill)
    and finish_region commits; the cancel then detaches all three."""
    spec = small_spec(models=("m1", "m2", "m3"), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    record_running(db, rid, ("m1", "q1"), ("m2", "q1"), ("m3", "q1"))
    db.execute(
        "UPDATE executions SET is_substantive = false WHERE job_id = %s AND model_id = 'm1'",
        (job_id,),
    )
    ids = {r["model_id"]: r["id"] for r in mirrored(db, rid)}
    heap = db.execute("SELECT id FROM executions WHERE job_id = %s ORDER BY ctid", (job_id,))
    assert [r[0] for r in heap] == [ids["m2"], ids["m3"], ids["m1"]]
    holder = connect(autocommit=False)
    holder.execute("SELECT 1 FROM executions WHERE id = %s FOR UPDATE", (ids["m3"],))
    runner = connect()  # autocommit, as the runner's statements are
    # Planner settings only (not a mirror switch): the cancel visits rows in heap order.
    runner.execute("SET enable_indexscan = off")
    runner.execute("SET enable_bitmapscan = off")
    writer_conn = connect()
    observer = connect(autocommit=False)
    errors: list[BaseException] = []

    def cancel() -> None:
        try:
            runner.execute(RUNNER_CANCEL, (job_id,))
        except BaseException as exc:
            errors.append(exc)

    def finish() -> None:
        try:
            writer.finish_region(writer_conn, rid, completed_at=FINISHED_AT)
        except BaseException as exc:
            errors.append(exc)

    t_cancel = threading.Thread(target=cancel)
    t_cancel.start()
    wait_blocked_or_done(db, runner.info.backend_pid, t_cancel)
    assert locked_execution_ids(observer, job_id) == {ids["m2"], ids["m3"]}
    t_finish = threading.Thread(target=finish)
    t_finish.start()
    wait_blocked_or_done(db, writer_conn.info.backend_pid, t_finish)
    # The mirror waits for r2 holding none of the region's rows (all or nothing), so the
    # runner's cancel can always finish first.
    holder.commit()
    t_cancel.join(30)
    t_finish.join(30)
    assert not t_cancel.is_alive() and not t_finish.is_alive()
    if errors:
        raise errors[0]
    # Serialised: the cancel (first) detached all three rows; the finished region leaves them.
    rows = assert_one_row_per_key(db, job_id)
    assert {(r["status"], r["mirror_region_result_id"]) for r in rows} == {("cancelled", None)}
    assert pairs(db, rid) == {}
    assert backfill.backfill(db).complete
    assert verify.verify(db).exit_code == 0


# --------------------------------------------------------------------------------------------
# Detach
# --------------------------------------------------------------------------------------------


def test_executions_mirror_detach_runner_cancel_detaches_and_survives_region_update(db):
    spec = small_spec(models=("m1", "m2"), questions=("q1", "q2"))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1", "completed")
    record_running(db, rid, ("m1", "q2"), ("m2", "q1"))
    db.execute(RUNNER_CANCEL, (job_id,))
    rows = assert_one_row_per_key(db, job_id)
    by_key = {(r["model_id"], r["question_id"]): r for r in rows}
    assert by_key[("m1", "q1")]["mirror_region_result_id"] == rid
    assert by_key[("m1", "q1")]["status"] == "completed"
    cancelled = [by_key[k] for k in [("m1", "q2"), ("m2", "q1")]]
    assert {
        (r["status"], r["mirror_region_result_id"], r["mirror_evidence"]) for r in cancelled
    } == {("cancelled", None, 3)}
    cancelled_ids = {r["id"] for r in cancelled}
    # (m2, q2) had no row: the cancel updates only rows that exist; the view derives it.
    assert shown_pairs(db, rid)[("m2", "q2")] == ("running", None, 1)

    # Later region updates (a pair recorded, the region finished) do not revert them.
    record(db, rid, "m2", "q1", "completed")
    writer.finish_region(db, rid, completed_at=FINISHED_AT)
    rows = assert_one_row_per_key(db, job_id)
    assert len(rows) == 4
    after = {r["id"]: r for r in rows}
    assert cancelled_ids <= set(after)
    assert {(after[i]["status"], after[i]["mirror_region_result_id"]) for i in cancelled_ids} == {
        ("cancelled", None)
    }
    assert pairs(db, rid) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m2", "q2"): ("failed", "no result recorded", 1),
    }
    # Deleting the region result removes its mirrored rows only: detached rows are direct rows.
    db.execute("DELETE FROM region_results WHERE id = %s", (rid,))
    assert {r["id"] for r in job_rows(db, job_id)} == cancelled_ids


def test_executions_mirror_detach_of_a_row_without_a_job_leaves_its_pair_to_the_mirror(db):
    """A run whose job row is missing yields rows with job_id NULL, which have no key (SPEC
    "Words"). The runner's cancel of one detaches it (a direct row now), but a row without a
    key owns nothing: the region result's pair is mirrored again at once, as a backfill would
    do, and nothing drifts. (Once: the pair stayed unmirrored until a backfill.)"""
    run = make_run(db)  # its jobspec_id has no jobs row
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        execution_output={
            "executions": [element("llama3.2-1b", "default", "running", completed_at=None)]
        },
    )
    [row] = mirrored(db, rr["id"])
    assert (row["job_id"], row["model_id"], row["question_id"]) == (None, "llama3.2-1b", "default")
    db.execute("UPDATE executions SET status = 'cancelled' WHERE id = %s", (row["id"],))
    detached = fetch(db, "SELECT * FROM executions WHERE id = %s", (row["id"],))[0]
    assert (detached["mirror_region_result_id"], detached["status"]) == (None, "cancelled")
    [again] = mirrored(db, rr["id"])
    assert again["id"] != row["id"]
    assert pairs(db, rr["id"]) == {("llama3.2-1b", "default"): ("running", None, 3)}
    report = verify.verify(db)
    assert report.exit_code == 0, report.to_dict()


def test_executions_mirror_detach_retry_update_detaches_and_survives_region_update(db):
    spec = small_spec(models=("m1", "m2"), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1", "completed")
    row = mirrored(db, rid)[0]
    db.execute(
        "UPDATE executions SET status = 'failed', original_error = 'provider 502', "
        "retry_count = retry_count + 1 WHERE id = %s",
        (row["id"],),
    )
    retried = fetch(db, "SELECT * FROM executions WHERE id = %s", (row["id"],))[0]
    assert (
        retried["status"],
        retried["original_error"],
        retried["retry_count"],
        retried["mirror_region_result_id"],
        retried["mirror_evidence"],
    ) == ("failed", "provider 502", 1, None, 3)
    assert retried["output_data"] == {"response": "answer m1/q1"}

    record(db, rid, "m1", "q1", "completed", output={"response": "again"})
    writer.finish_region(db, rid, completed_at=FINISHED_AT)
    rows = assert_one_row_per_key(db, job_id)
    assert len(rows) == 2
    kept = next(r for r in rows if r["model_id"] == "m1")
    assert (
        kept["id"],
        kept["status"],
        kept["original_error"],
        kept["mirror_region_result_id"],
    ) == (row["id"], "failed", "provider 502", None)
    assert pairs(db, rid) == {("m2", "q1"): ("failed", "no result recorded", 1)}


def test_executions_mirror_detach_update_of_column_mirror_does_not_own_keeps_link(db):
    spec = small_spec(models=("m1",), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1", "running", completed_at=None)
    row = mirrored(db, rid)[0]
    db.execute(
        "UPDATE executions SET is_substantive = true, response_classification = "
        "'substantive', response_length = 42 WHERE id = %s",
        (row["id"],),
    )
    assert pairs(db, rid) == {("m1", "q1"): ("running", None, 3)}
    # Still mirrored: it follows the region, and keeps the columns the mirror does not own.
    record(db, rid, "m1", "q1", "completed")
    after = fetch(db, "SELECT * FROM executions WHERE id = %s", (row["id"],))[0]
    assert (
        after["status"],
        after["mirror_region_result_id"],
        after["is_substantive"],
        after["response_classification"],
        after["response_length"],
    ) == ("completed", rid, True, "substantive", 42)


def test_executions_mirror_detach_hand_fix_of_output_detaches(db):
    spec = small_spec(models=("m1",), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1")
    row = mirrored(db, rid)[0]
    db.execute(
        "UPDATE executions SET output_data = %s WHERE id = %s",
        (Jsonb({"response": "fixed by hand"}), row["id"]),
    )
    assert pairs(db, rid) == {}
    record(db, rid, "m1", "q1", output={"response": "writer again"})
    rows = job_rows(db, job_id)
    assert [
        (r["id"], r["output_data"], r["mirror_region_result_id"], r["mirror_evidence"])
        for r in rows
    ] == [(row["id"], {"response": "fixed by hand"}, None, 3)]


def test_executions_mirror_detach_key_change_leaves_old_key_to_the_mirror(db):
    """A hand fix moving a mirrored row to another key detaches it to the new key; the old
    key, owned by no direct row, goes back to the mirror (once it was left empty while the
    region result still counted as mirrored). Scenario: job with models [m1], questions
    [q1, q2]; writer start_region + record_pair (m1, q1) completed.
    UPDATE executions SET question_id = 'q3' WHERE job_id = J AND question_id = 'q1';
    -> row moved to (m1, q3), detached; no row at all for (m1, q1);
       SELECT mirrored FROM region_results_mirror_inputs -> true;
       SELECT * FROM region_results_mirror_apply(ARRAY[R]) -> inserted 1."""
    spec = small_spec(models=("m1",), questions=("q1", "q2"))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1")
    moved = next(r for r in mirrored(db, rid) if r["question_id"] == "q1")
    db.execute("UPDATE executions SET question_id = 'q3' WHERE id = %s", (moved["id"],))
    rows = assert_one_row_per_key(db, job_id)
    assert next(r for r in rows if r["id"] == moved["id"])["mirror_region_result_id"] is None
    assert keys_of(rows) == [("US", "m1", "q1"), ("US", "m1", "q3")]
    assert pairs(db, rid) == {("m1", "q1"): ("completed", None, 3)}
    assert shown_pairs(db, rid) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m1", "q2"): ("running", None, 1),  # a placeholder, derived
    }


def test_region_results_mirror_rows_without_job_have_no_key(db):
    run = make_run(db)  # no jobs row
    a = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        execution_output={"executions": [element("m1", "q1")]},
    )
    b = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        execution_output={"executions": [element("m1", "q1", "failed")]},
    )
    direct = make_direct_execution(db, job_id=None, model_id="m1", question_id="q1")
    rows = fetch(db, "SELECT * FROM executions WHERE job_id IS NULL AND model_id = 'm1'")
    assert sorted(
        (r["id"] == direct["id"], r["mirror_region_result_id"] is None, r["status"]) for r in rows
    ) == [(False, False, "completed"), (False, False, "failed"), (True, True, "completed")]
    assert pairs(db, a["id"])[("m1", "q1")] == ("completed", None, 3)
    assert pairs(db, b["id"])[("m1", "q1")] == ("failed", None, 3)


# --------------------------------------------------------------------------------------------
# Transparency log references
# --------------------------------------------------------------------------------------------


def log_execution(conn: psycopg.Connection[Any], row: dict[str, Any], jobspec_id: str) -> None:
    conn.execute(
        "INSERT INTO transparency_log (execution_id, job_id, region, provider_id, status) "
        "VALUES (%s, %s, %s, %s, %s)",
        (row["id"], jobspec_id, row["region"], row["provider_id"], row["status"]),
    )


def test_region_results_mirror_transparency_log_reference_detaches_on_region_delete(db):
    spec = small_spec(models=("m1", "m2"), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1")
    logged = next(r for r in mirrored(db, rid) if r["model_id"] == "m1")
    log_execution(db, logged, spec["id"])

    db.execute("DELETE FROM region_results WHERE id = %s", (rid,))  # commits (autocommit)
    assert not region_exists(db, rid)
    rows = job_rows(db, job_id)
    assert [
        (r["id"], r["mirror_region_result_id"], r["mirror_evidence"], r["status"]) for r in rows
    ] == [(logged["id"], None, 3, "completed")]
    assert anomaly_kinds(db, rid) == ["transparency_log_reference"]


def test_executions_mirror_claim_transparency_log_reference_detaches_on_direct_row(db):
    spec = small_spec(models=("m1",), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1")
    logged = mirrored(db, rid)[0]
    log_execution(db, logged, spec["id"])
    direct = make_direct_execution(db, job_id=job_id, model_id="m1", question_id="q1")
    assert {r["id"]: r["mirror_region_result_id"] for r in job_rows(db, job_id)} == {
        logged["id"]: None,
        direct["id"]: None,
    }
    assert anomaly_kinds(db, rid) == ["transparency_log_reference"]


def test_region_results_mirror_transparency_log_reference_detaches_when_pair_no_longer_yielded(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        execution_output={"executions": [element("x", "y")]},
    )
    logged = next(r for r in mirrored(db, rr["id"]) if r["model_id"] == "x")
    log_execution(db, logged, job["jobspec_id"])
    db.execute(
        "UPDATE region_results SET execution_output = '{\"executions\": []}' WHERE id = %s",
        (rr["id"],),
    )
    assert pairs(db, rr["id"]) == {}
    assert shown_pairs(db, rr["id"]) == {("m1", "q1"): ("running", None, 1)}
    kept = fetch(db, "SELECT * FROM executions WHERE id = %s", (logged["id"],))[0]
    assert (kept["mirror_region_result_id"], kept["mirror_evidence"], kept["status"]) == (
        None,
        3,
        "completed",
    )
    assert anomaly_kinds(db, rr["id"]) == ["transparency_log_reference"]


def test_cross_region_executions_mirror_delete_run_with_transparency_log_reference(db):
    run = seed.record_with_writer(db, seed.jobspec(unique_jobspec_id(), regions=["US"]))
    rid = run.region_result_ids["US"]
    logged = mirrored(db, rid)[0]
    log_execution(db, logged, "whatever")
    db.execute("DELETE FROM cross_region_executions WHERE id = %s", (run.run_id,))
    rows = job_rows(db, run.job_id)
    assert [
        (r["id"], r["mirror_region_result_id"], r["cross_region_execution_id"]) for r in rows
    ] == [(logged["id"], None, None)]
    assert anomaly_kinds(db, rid) == ["transparency_log_reference"]


def delete_while_triggers_skipped(conn: psycopg.Connection[Any], rid: uuid.UUID) -> None:
    """Delete a region result the way a restore or a hand fix with triggers off would: its
    mirrored rows stay behind (it is not mirrored until a backfill)."""
    conn.execute("ALTER TABLE region_results DISABLE TRIGGER USER")
    try:
        conn.execute("DELETE FROM region_results WHERE id = %s", (rid,))
    finally:
        conn.execute("ALTER TABLE region_results ENABLE TRIGGER USER")


def test_cross_region_executions_mirror_delete_run_after_a_skipped_region_delete(db):
    """A region result deleted while triggers were skipped leaves its mirrored rows, which
    reference the run: deleting the run still works, and they go (the logged one is detached
    and lets go of the run). (Once: the DELETE failed on executions' foreign key.)"""
    run = seed.record_with_writer(db, seed.jobspec(unique_jobspec_id(), regions=["US"]))
    rid = run.region_result_ids["US"]
    logged = mirrored(db, rid)[0]
    log_execution(db, logged, "whatever")
    delete_while_triggers_skipped(db, rid)
    assert len(mirrored(db, rid)) == 9
    db.execute("DELETE FROM cross_region_executions WHERE id = %s", (run.run_id,))
    rows = job_rows(db, run.job_id)
    assert [
        (r["id"], r["mirror_region_result_id"], r["cross_region_execution_id"]) for r in rows
    ] == [(logged["id"], None, None)]


def test_executions_mirror_claim_removes_a_gone_region_results_row_of_its_key(db):
    """A region result deleted while triggers were skipped leaves its mirrored rows; a direct
    row arriving for one of their keys owns it, so the mirrored row of that key goes at once
    (the runner's naive read never shows both), and with it the rest of the gone region
    result's rows, as a backfill would remove them. (Once: it stayed until a backfill.)"""
    spec = small_spec(models=("m1",), questions=("q1", "q2"))
    job_id, _, rid = writer_region(db, spec)
    delete_while_triggers_skipped(db, rid)
    direct = make_direct_execution(db, job_id=job_id, model_id="m1", question_id="q1")
    assert_one_row_per_key(db, job_id)
    assert [(r["model_id"], r["question_id"]) for r in mirrored(db, rid)] == []
    assert direct["id"] in {r["id"] for r in job_rows(db, job_id)}


# --------------------------------------------------------------------------------------------
# A jobs row arriving late, a spec changing
# --------------------------------------------------------------------------------------------


def test_jobs_mirror_late_job_remirrors_writer_rows_with_real_models_and_job_id(db):
    spec = seed.jobspec(unique_jobspec_id())
    run = seed.record_with_writer(db, spec, create_job=False)
    ids = list(run.region_result_ids.values())
    before = fetch(db, "SELECT * FROM executions WHERE mirror_region_result_id = ANY(%s)", (ids,))
    assert len(before) == 20  # 18 recorded pairs + the fallback pair (llama3.2-1b, default) x 2
    assert {r["job_id"] for r in before} == {None}
    fallback = [r for r in before if r["question_id"] == "default"]
    assert {
        (r["model_id"], r["status"], r["original_error"], r["mirror_evidence"]) for r in fallback
    } == {("llama3.2-1b", "failed", "no result recorded", 1)}
    assert anomaly_kinds(db, ids[0]) == ["missing_job"]

    job_id = writer.create_job(db, spec)
    rows = assert_one_row_per_key(db, job_id)
    assert len(rows) == 18
    assert {r["mirror_region_result_id"] for r in rows} == set(ids)
    assert {(r["status"], r["mirror_evidence"]) for r in rows} == {("completed", 3)}
    assert db.execute("SELECT count(*) FROM executions WHERE job_id IS NULL").fetchone() == (0,)


def test_jobs_mirror_late_job_remirrors_legacy_rows(db):
    spec = seed.jobspec(unique_jobspec_id())
    run = seed.record_legacy(db, spec, create_job=False)
    ids = list(run.region_result_ids.values())
    before = fetch(db, "SELECT * FROM executions WHERE mirror_region_result_id = ANY(%s)", (ids,))
    assert {
        (r["job_id"], r["model_id"], r["question_id"], r["status"], r["mirror_evidence"])
        for r in before
    } == {(None, "llama3.2-1b", "default", "completed", 2)}
    assert len(before) == 2

    job = make_job(db, jobspec_id=spec["id"], jobspec_data=spec)
    rows = assert_one_row_per_key(db, job["id"])
    assert len(rows) == 18
    assert sorted(
        (r["region"], r["model_id"], r["question_id"]) for r in rows if r["status"] == "completed"
    ) == [("EU", "llama3.2-1b", "greatest_invention"), ("US", "llama3.2-1b", "greatest_invention")]
    assert len([r for r in rows if r["status"] == "failed"]) == 16
    assert db.execute("SELECT count(*) FROM executions WHERE job_id IS NULL").fetchone() == (0,)


def test_jobs_mirror_spec_update_remirrors_new_questions(db):
    spec = small_spec(models=("m1",), questions=("q1",))
    job, run = job_and_run(db, spec=spec)
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        status="success",
        completed_at=FINISHED_AT,
        execution_output={"executions": [element("m1", "q1")]},
    )
    spec["questions"] = ["q1", "q2"]
    spec["metadata"]["models"] = ["m1", "m3"]
    db.execute("UPDATE jobs SET jobspec_data = %s WHERE id = %s", (Jsonb(spec), job["id"]))
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m1", "q2"): ("failed", "no result recorded", 1),
        ("m3", "q1"): ("failed", "no result recorded", 1),
        ("m3", "q2"): ("failed", "no result recorded", 1),
    }


def test_jobs_mirror_spec_update_of_a_field_the_rule_does_not_read_writes_nothing(db):
    run = seed.record_with_writer(db, seed.jobspec())
    seq, xmins = sequence_state(db), executions_xmins(db)
    spec = seed.jobspec()
    spec["metadata"]["estimated_cost"] = 0.42
    db.execute(
        "UPDATE jobs SET jobspec_data = %s, status = 'completed' WHERE id = %s",
        (Jsonb(spec), run.job_id),
    )
    db.execute("UPDATE jobs SET jobspec_data = jobspec_data WHERE id = %s", (run.job_id,))
    assert (sequence_state(db), executions_xmins(db)) == (seq, xmins)


# --------------------------------------------------------------------------------------------
# Quiet and idempotent
# --------------------------------------------------------------------------------------------


def test_region_results_mirror_apply_rerun_on_unchanged_data_changes_nothing(db):
    run = seed.record_with_writer(db, seed.jobspec())
    legacy = seed.record_legacy(db, seed.jobspec(seed.LEGACY_JOBSPEC_ID))
    seq, xmins = sequence_state(db), executions_xmins(db)
    state = db.execute(
        "SELECT region_result_id, r_xmin::text, job_fingerprint, mirrored_at, "
        "xmin::text FROM region_results_mirror_state ORDER BY 1"
    ).fetchall()
    for rid in [*run.region_result_ids.values(), *legacy.region_result_ids.values()]:
        counts = apply(db, rid)
        assert counts == {
            "inserted": 0,
            "updated": 0,
            "deleted": 0,
            "detached": 0,
            "left_to_direct": 0,
            "anomalies": 0,
            "states": 0,
            "deferred": 0,
        }
    assert sequence_state(db) == seq
    assert executions_xmins(db) == xmins
    assert (
        db.execute(
            "SELECT region_result_id, r_xmin::text, job_fingerprint, mirrored_at, "
            "xmin::text FROM region_results_mirror_state ORDER BY 1"
        ).fetchall()
        == state
    )


def test_region_results_mirror_noop_update_writes_no_executions_row(db):
    seed.record_with_writer(db, seed.jobspec())
    seed.record_legacy(db, seed.jobspec(seed.LEGACY_JOBSPEC_ID))
    seq, xmins = sequence_state(db), executions_xmins(db)
    assert len(xmins) == 36
    db.execute("UPDATE region_results SET metadata = metadata")
    assert executions_xmins(db) == xmins
    assert sequence_state(db) == seq


def test_region_results_mirror_append_one_element_to_1000_pairs_inserts_one_row(db):
    models = [f"model-{i:02d}" for i in range(40)]
    questions = [f"question-{j:02d}" for j in range(25)]
    spec = seed.jobspec(unique_jobspec_id(), regions=["US"], models=models, questions=questions)
    _, _, rid = writer_region(db, spec)
    assert mirrored(db, rid) == [] and len(shown_pairs(db, rid)) == 1000  # placeholders
    record(db, rid, models[0], questions[0])
    before = executions_xmins(db)

    record(db, rid, models[7], questions[3])  # appends one element to execution_output.executions
    after = executions_xmins(db)
    [new] = set(after) - set(before)
    assert {i: after[i] for i in before} == before  # no other row written
    row = fetch(db, "SELECT * FROM executions WHERE id = %s", (new,))[0]
    assert (row["model_id"], row["question_id"], row["status"], row["mirror_evidence"]) == (
        models[7],
        questions[3],
        "completed",
        3,
    )
    seq = sequence_state(db)

    # Replacing an element in place (a retried pair) is just as local.
    before = after
    record(db, rid, models[0], questions[0], "failed", error="retry failed")
    after = executions_xmins(db)
    changed = [i for i in after if after[i] != before[i]]
    assert len(changed) == 1
    assert pairs(db, rid)[(models[0], questions[0])] == ("failed", "retry failed", 3)
    assert sequence_state(db) == seq


def test_region_results_mirror_apply_catches_up_after_triggers_were_disabled(db):
    job, run = job_and_run(db, models=("m1", "m2"), questions=("q1",))
    rr = make_region_result(db, cross_region_execution_id=run["id"])
    db.execute("ALTER TABLE region_results DISABLE TRIGGER USER")
    try:
        db.execute(
            "UPDATE region_results SET status = 'success', completed_at = %s, "
            "execution_output = %s WHERE id = %s",
            (FINISHED_AT, Jsonb({"executions": [element("m2", "q1")]}), rr["id"]),
        )
    finally:
        db.execute("ALTER TABLE region_results ENABLE TRIGGER USER")
    assert pairs(db, rr["id"]) == {}  # stored while running: nothing
    counts = apply(db, rr["id"])
    assert (counts["inserted"], counts["updated"], counts["deleted"], counts["states"]) == (
        2,
        0,
        0,
        1,
    )
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("failed", "no result recorded", 1),
        ("m2", "q1"): ("completed", None, 3),
    }
    # A later per-pair append re-derives correctly on top of the caught-up state.
    record(db, rr["id"], "m1", "q1", "completed")
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m2", "q1"): ("completed", None, 3),
    }


def test_region_results_mirror_append_after_triggers_were_disabled_rederives_region(db):
    spec = small_spec(models=("m1", "m2", "m3"), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1")
    db.execute("ALTER TABLE region_results DISABLE TRIGGER USER")
    try:  # written while the mirror was off: the region finished, m2 recorded
        writer.record_pair(
            db, rid, model_id="m2", question_id="q1", status="failed", error="skipped write"
        )
        db.execute(
            "UPDATE region_results SET status = 'success', completed_at = %s WHERE id = %s",
            (FINISHED_AT, rid),
        )
    finally:
        db.execute("ALTER TABLE region_results ENABLE TRIGGER USER")
    assert ("m2", "q1") not in pairs(db, rid)  # not mirrored: nothing stored for it yet
    # The next append must not take the per-element shortcut over a stale state.
    record(db, rid, "m3", "q1")
    assert pairs(db, rid) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m2", "q1"): ("failed", "skipped write", 3),
        ("m3", "q1"): ("completed", None, 3),
    }
    assert {r["completed_at"] for r in mirrored(db, rid) if r["model_id"] == "m2"} == {NAIVE_FINISH}
    assert apply(db, rid)["updated"] == 0


def test_region_results_mirror_append_after_spec_changed_with_triggers_disabled(db):
    spec = small_spec(models=("m1",), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    spec["questions"] = ["q1", "q2"]
    db.execute("ALTER TABLE jobs DISABLE TRIGGER USER")
    try:
        db.execute("UPDATE jobs SET jobspec_data = %s WHERE id = %s", (Jsonb(spec), job_id))
    finally:
        db.execute("ALTER TABLE jobs ENABLE TRIGGER USER")
    assert pairs(db, rid) == {}
    record(db, rid, "m1", "q1")
    assert pairs(db, rid) == {("m1", "q1"): ("completed", None, 3)}
    assert shown_pairs(db, rid) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m1", "q2"): ("running", None, 1),
    }


# --------------------------------------------------------------------------------------------
# Never fail the writer over data: the bad-data matrix
# --------------------------------------------------------------------------------------------


def finished_region(
    conn: psycopg.Connection[Any], run: dict[str, Any], elements: Any = None, **overrides: Any
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "cross_region_execution_id": run["id"],
        "status": "success",
        "completed_at": FINISHED_AT,
        "error_message": "",
    }
    if elements is not None:
        values["execution_output"] = {"executions": elements}
    values.update(overrides)
    rr = make_region_result(conn, **values)
    assert region_exists(conn, rr["id"])  # the write committed
    return rr


def test_region_results_mirror_bad_data_missing_job(db):
    run = make_run(db)  # no jobs row for its jobspec_id
    rr = finished_region(db, run, [element("mistral-7b", "q1")])
    rows = mirrored(db, rr["id"])
    assert {r["job_id"] for r in rows} == {None}
    assert pairs(db, rr["id"]) == {
        ("llama3.2-1b", "default"): ("failed", "no result recorded", 1),  # R.model_id, default
        ("mistral-7b", "q1"): ("completed", None, 3),
    }
    assert anomaly_kinds(db, rr["id"]) == ["missing_job"]
    # models fall back to R.model_id when the region has one of its own.
    rr2 = finished_region(db, make_run(db), [], model_id="qwen2.5-1.5b")
    assert pairs(db, rr2["id"]) == {
        ("qwen2.5-1.5b", "default"): ("failed", "no result recorded", 1)
    }
    assert anomaly_kinds(db, rr2["id"]) == ["missing_job"]


def test_region_results_mirror_bad_data_models_is_a_string(db):
    spec = small_spec(models="mistral-7b,qwen2.5-1.5b", questions=("q1",))
    spec["metadata"]["model"] = "qwen2.5-1.5b"
    job, run = job_and_run(db, spec=spec)
    rr = finished_region(db, run, [])
    assert pairs(db, rr["id"]) == {("qwen2.5-1.5b", "q1"): ("failed", "no result recorded", 1)}
    assert anomaly_kinds(db, rr["id"]) == ["malformed_models"]


def test_region_results_mirror_bad_data_models_array_of_unusable_entries(db):
    spec = small_spec(models=[None, "", 7, {"id": ""}, {"label": "x"}, ["m"]], questions=("q1",))
    del spec["metadata"]["model"]
    job, run = job_and_run(db, spec=spec)
    rr = finished_region(db, run, [])
    # No usable id, no metadata.model: R.model_id (the runner's default llama3.2-1b).
    assert pairs(db, rr["id"]) == {("llama3.2-1b", "q1"): ("failed", "no result recorded", 1)}
    assert anomaly_kinds(db, rr["id"]) == ["malformed_models"] * 6


def test_region_results_mirror_models_objects_and_duplicates(db):
    spec = small_spec(
        models=[{"id": "a", "name": "A"}, {"model_id": "b"}, {"name": "c"}, "a", {"id": "b"}, ""],
        questions=["q1", {"id": "q2"}, "q1"],
    )
    job, run = job_and_run(db, spec=spec)
    rr = finished_region(db, run, [])
    assert list(pairs(db, rr["id"])) == [
        ("a", "q1"),
        ("a", "q2"),
        ("b", "q1"),
        ("b", "q2"),
        ("c", "q1"),
        ("c", "q2"),
    ]
    assert anomaly_kinds(db, rr["id"]) == ["malformed_models"]  # the "" entry


def test_region_results_mirror_models_fall_back_to_metadata_model(db):
    spec = small_spec(models=[], questions=("q1",))
    spec["metadata"]["model"] = "mistral-7b"
    job, run = job_and_run(db, spec=spec)
    rr = finished_region(db, run, [])
    assert pairs(db, rr["id"]) == {("mistral-7b", "q1"): ("failed", "no result recorded", 1)}
    assert anomaly_kinds(db, rr["id"]) == []


def test_region_results_mirror_bad_data_questions_is_an_object(db):
    spec = small_spec(models=("m1",), questions={"q1": "What is 2+2?"})
    job, run = job_and_run(db, spec=spec)
    rr = finished_region(db, run, [element("m1", "q1")])
    assert pairs(db, rr["id"]) == {
        ("m1", "default"): ("failed", "no result recorded", 1),
        ("m1", "q1"): ("completed", None, 3),
    }
    assert anomaly_kinds(db, rr["id"]) == ["malformed_questions"]


@pytest.mark.parametrize(
    ("completed_at", "expected_status", "expected_error", "expected_completed_at"),
    [(FINISHED_AT, "failed", "region exploded", NAIVE_FINISH), (None, "pending", None, None)],
)
def test_region_results_mirror_bad_data_unknown_region_status(
    db, completed_at, expected_status, expected_error, expected_completed_at
):
    job, run = job_and_run(db, models=("m1", "m2"), questions=("q1",))
    rr = finished_region(
        db,
        run,
        [element("m1", "q1", completed_at=None)],
        status="Exploded",
        completed_at=completed_at,
        error_message="region exploded",
    )
    got = shown_pairs(db, rr["id"])
    assert got == {
        ("m1", "q1"): ("completed", None, 3),
        ("m2", "q1"): (expected_status, expected_error, 1),
    }
    [m2] = fetch(
        db,
        "SELECT completed_at FROM executions_unified WHERE region_result_id = %s "
        "AND model_id = 'm2'",
        (rr["id"],),
    )
    assert m2["completed_at"] == (
        expected_completed_at and expected_completed_at.replace(tzinfo=UTC)
    )
    assert anomaly_kinds(db, rr["id"]) == ["unknown_status"]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("success", "completed"),
        ("SUCCEEDED", "completed"),
        (" Done ", "completed"),
        ("finished", "completed"),
        ("Error", "failed"),
        ("timeout", "failed"),
        ("processing", "running"),
        ("RETRYING", "running"),
        ("queued", "pending"),
        ("Canceled", "cancelled"),
    ],
)
def test_region_results_mirror_region_status_vocabulary(db, word, expected):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    finished = expected in ("completed", "failed", "cancelled")
    rr = finished_region(db, run, [], status=word, completed_at=FINISHED_AT if finished else None)
    status = {"completed": "failed"}.get(expected, expected)  # no result for the pair
    assert [v[0] for v in shown_pairs(db, rr["id"]).values()] == [status]
    assert len(mirrored(db, rr["id"])) == (1 if finished else 0)  # a placeholder is derived
    assert anomaly_kinds(db, rr["id"]) == []


def test_region_results_mirror_region_status_trimmed_of_any_whitespace(db):
    """Status words are matched after trimming any whitespace (tabs, newlines), not only
    spaces."""
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(db, run, [element("m1", "q1", "\tCompleted\n")], status="\tsuccess\n")
    assert pairs(db, rr["id"]) == {("m1", "q1"): ("completed", None, 3)}
    assert anomaly_kinds(db, rr["id"]) == []


def test_region_results_mirror_unknown_element_status_uses_region_completed_at(db):
    """An element's unknown status maps to failed when R (or the element) has a completed_at
    (SPEC, Status): on a finished region the element keeps its own error, and the only anomaly
    is the unknown status (not 'no result recorded' / unfinished_element)."""
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(
        db, run, [{"model_id": "m1", "question_id": "q1", "status": "crashed", "error": "OOM"}]
    )
    assert pairs(db, rr["id"]) == {("m1", "q1"): ("failed", "OOM", 3)}
    assert anomaly_kinds(db, rr["id"]) == ["unknown_status"]


def test_region_results_mirror_bad_data_unknown_element_status(db):
    job, run = job_and_run(db, models=("m1", "m2"), questions=("q1",))
    rr = finished_region(
        db,
        run,
        [
            element("m1", "q1", "weird"),  # has completed_at: failed
            element("m2", "q1", None, completed_at=None, output=None),  # NULL status: pending
        ],
        status="running",
        completed_at=None,
    )
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("failed", None, 3),
        ("m2", "q1"): ("pending", None, 3),
    }
    assert anomaly_kinds(db, rr["id"]) == ["unknown_status"]


def test_region_results_mirror_bad_data_element_not_an_object(db):
    job, run = job_and_run(db, models=("m1", "m2"), questions=("q1",))
    rr = finished_region(db, run, ["m2/q1 completed", 42, None, element("m1", "q1")])
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m2", "q1"): ("failed", "no result recorded", 1),
    }
    assert anomaly_kinds(db, rr["id"]) == ["invalid_element"] * 3


def test_region_results_mirror_bad_data_element_lacking_model_id(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1", "q2"))
    no_model = element("m1", "q2")
    del no_model["model_id"]
    rr = finished_region(
        db, run, [no_model, element("", "q2"), element("m1", 5), element("m1", "q1")]
    )
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m1", "q2"): ("failed", "no result recorded", 1),
    }
    assert anomaly_kinds(db, rr["id"]) == ["invalid_element"] * 3


def test_region_results_mirror_bad_data_malformed_executions(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(
        db,
        run,
        None,
        execution_output={
            "executions": {"m1": "done"},
            "data": {"response": "legacy answer"},
            "hash": "",
        },
    )
    # Not an array: the legacy single answer still counts.
    assert pairs(db, rr["id"]) == {("m1", "q1"): ("completed", None, 2)}
    assert anomaly_kinds(db, rr["id"]) == ["malformed_executions"]


@pytest.mark.parametrize(
    ("model_id", "question_id", "mirrored_pair"),
    [
        ("m" * 51, "q1", False),
        ("x" * 50, "q1", True),
        ("m1", "q" * 256, False),
        ("m1", "q" * 255, True),
    ],
)
def test_region_results_mirror_bad_data_over_long_ids(db, model_id, question_id, mirrored_pair):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(db, run, [element(model_id, question_id), element("m1", "q1")])
    expected = {("m1", "q1"): ("completed", None, 3)}
    if mirrored_pair:
        expected[(model_id, question_id)] = ("completed", None, 3)
    assert pairs(db, rr["id"]) == expected
    assert anomaly_kinds(db, rr["id"]) == ([] if mirrored_pair else ["id_too_long"])


def test_region_results_mirror_bad_data_over_long_model_in_spec(db):
    spec = small_spec(models=("m1", "m" * 51), questions=("q1",))
    job, run = job_and_run(db, spec=spec)
    rr = finished_region(db, run, [])
    assert pairs(db, rr["id"]) == {("m1", "q1"): ("failed", "no result recorded", 1)}
    assert anomaly_kinds(db, rr["id"]) == ["id_too_long"]


@pytest.mark.parametrize(
    "bad_time",
    [
        "yesterday",
        "2025-02-30T10:00:00Z",
        "",
        1760288315,
        "2025-10-12T25:00:00Z",
        "0000-01-01T00:00:00Z",
    ],
)
def test_region_results_mirror_bad_data_unparsable_element_time(db, bad_time):
    db.execute("SET TimeZone = 'Asia/Tokyo'")
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(
        db, run, [element("m1", "q1", started_at=bad_time, completed_at="2025-10-12T17:00:09Z")]
    )
    row = mirrored(db, rr["id"])[0]
    assert (row["status"], row["started_at"], row["created_at"], row["completed_at"]) == (
        "completed",
        NAIVE_START,
        NAIVE_START,
        NAIVE_START + timedelta(seconds=9),
    )
    assert anomaly_kinds(db, rr["id"]) == ["invalid_time"]


def test_region_results_mirror_bad_data_unparsable_completed_at_falls_back_to_region(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(db, run, [element("m1", "q1", completed_at="2025-02-29T10:00:00Z")])
    row = mirrored(db, rr["id"])[0]
    assert (row["status"], row["completed_at"]) == ("completed", NAIVE_FINISH)
    assert anomaly_kinds(db, rr["id"]) == ["invalid_time"]


@pytest.mark.parametrize(
    ("started", "expected"),
    [
        ("2025-03-01T10:00:00", datetime(2025, 3, 1, 10, 0)),
        ("2025-03-01 10:00:00.250", datetime(2025, 3, 1, 10, 0, 0, 250000)),
        ("2025-03-01", datetime(2025, 3, 1)),
        ("2025-03-01T10:00:00+05:30", datetime(2025, 3, 1, 4, 30)),
        ("2025-03-01T10:00:00-0800", datetime(2025, 3, 1, 18, 0)),
        ("2024-02-29T23:59:59z", datetime(2024, 2, 29, 23, 59, 59)),
    ],
)
def test_region_results_mirror_element_time_without_zone_is_utc(db, started, expected):
    db.execute("SET TimeZone = 'America/New_York'")
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(
        db, run, [element("m1", "q1", started_at=started, completed_at="2025-03-02T00:00:00Z")]
    )
    row = mirrored(db, rr["id"])[0]
    assert (row["started_at"], row["created_at"], row["completed_at"]) == (
        expected,
        expected,
        datetime(2025, 3, 2),
    )
    assert anomaly_kinds(db, rr["id"]) == []


def test_region_results_mirror_bad_data_running_element_on_finished_region(db):
    job, run = job_and_run(db, models=("m1", "m2"), questions=("q1",))
    rr = finished_region(
        db,
        run,
        [
            element("m1", "q1", "running", completed_at=None, output=None),
            element("m2", "q1", "pending", completed_at=None, output=None),
        ],
        error_message="region error text",
    )
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("failed", "no result recorded", 3),
        ("m2", "q1"): ("failed", "no result recorded", 3),
    }
    assert {r["completed_at"] for r in mirrored(db, rr["id"])} == {NAIVE_FINISH}
    assert anomaly_kinds(db, rr["id"]) == ["unfinished_element"] * 2


def test_region_results_mirror_repeated_pair_last_element_wins(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(
        db,
        run,
        [
            element("m1", "q1", "failed", error="first try"),
            element("m1", "q1", "completed", output={"response": "second try"}),
        ],
    )
    rows = mirrored(db, rr["id"])
    assert [(r["status"], r["original_error"], r["output_data"]) for r in rows] == [
        ("completed", None, {"response": "second try"})
    ]
    assert rows[0]["receipt_data"] == {"id": "receipt-m1-q1"}
    assert anomaly_kinds(db, rr["id"]) == []


def test_region_results_mirror_provider_id_null_becomes_empty_string(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(db, run, [element("m1", "q1")], provider_id=None)
    assert [r["provider_id"] for r in mirrored(db, rr["id"])] == [""]


def test_region_results_mirror_columns_it_does_not_own_keep_defaults(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(db, run, [element("m1", "q1")])
    row = mirrored(db, rr["id"])[0]
    assert (
        row["is_substantive"],
        row["is_content_refusal"],
        row["is_technical_error"],
        row["response_classification"],
        row["response_length"],
        row["system_prompt"],
        row["retry_count"],
        row["max_retries"],
        row["last_retry_at"],
        row["retry_history"],
        row["ipfs_cid"],
        row["ipfs_pinned_at"],
    ) == (False, False, False, "unknown", 0, None, 0, 3, None, [], None, None)


# --------------------------------------------------------------------------------------------
# Property: whatever is written, the materialised rows are the rule's rows
# --------------------------------------------------------------------------------------------

MODEL_POOL = ["m1", "m2", "m3"]
QUESTION_POOL = ["q1", "q2"]
KNOWN_WORDS = list(VOCAB)  # every word the SPEC maps


@st.composite
def status_words(draw: st.DrawFn, allow_null: bool) -> str | None:
    choice = draw(
        st.sampled_from(["known", "case", "space", "unknown"] + (["null"] if allow_null else []))
    )
    if choice == "null":
        return None
    word = draw(st.sampled_from(KNOWN_WORDS))
    if choice == "case":
        return "".join(c.upper() if draw(st.booleans()) else c for c in word)
    if choice == "space":
        before = draw(st.sampled_from([" ", "  ", "\t", "\n"]))
        return before + word + draw(st.sampled_from(["", " ", "\t"]))
    if choice == "unknown":
        return draw(st.sampled_from(["exploded", "", "SUCCESSFUL", "ok", "partial", "42"]))
    return word


time_values = st.one_of(
    st.just("absent"),
    st.none(),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)).map(
        lambda d: d.isoformat()
    ),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)).map(
        lambda d: d.replace(microsecond=0).isoformat() + "Z"
    ),
    st.datetimes(
        min_value=datetime(2020, 1, 1),
        max_value=datetime(2030, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
        ),
    ).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "yesterday",
            "2025-02-30T10:00:00Z",
            "",
            "2025-13-01",
            "2025-10-12 17:00",
            "2025-10-12T17:00:00+05",
            "0000-01-01",
            "2025-10-12T24:00:00Z",
            17,
            True,
        ]
    ),
)


@st.composite
def elements_of(draw: st.DrawFn) -> Any:
    out: list[Any] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["pair"] * 6 + ["garbage", "no_model", "long"]))
        if kind == "garbage":
            out.append(draw(st.sampled_from(["x", 1, None, [], {"a": 1}])))
            continue
        el: dict[str, Any] = {
            "model_id": draw(st.sampled_from(MODEL_POOL + ["m9"])),
            "question_id": draw(st.sampled_from(QUESTION_POOL + ["q9"])),
            "status": draw(status_words(allow_null=True)),
            "output": draw(st.sampled_from([None, {"response": "r1"}, {"response": "r2"}])),
            "receipt": draw(st.sampled_from([None, {"id": "receipt-1"}])),
            "error": draw(st.sampled_from([None, "", "boom"])),
        }
        for field in ("started_at", "completed_at"):
            value = draw(time_values)
            if value != "absent":
                el[field] = value
        if kind == "no_model":
            el.pop("model_id")
        if kind == "long":
            el["model_id"] = "m" * 51
        out.append(el)
    return out


@st.composite
def execution_outputs(draw: st.DrawFn) -> Any:
    shape = draw(st.sampled_from(["null", "elements", "elements+data", "legacy", "bad", "nodata"]))
    data = {"response": "legacy", "metadata": {"model": draw(st.sampled_from(MODEL_POOL + ["zz"]))}}
    if shape == "null":
        return None
    if shape == "elements":
        return {"executions": draw(elements_of())}
    if shape == "elements+data":
        return {"executions": draw(elements_of()), "data": data, "hash": ""}
    if shape == "legacy":
        return {"data": data, "hash": ""}
    if shape == "bad":
        return {"executions": draw(st.sampled_from([{"m1": 1}, "x", 3])), "data": data}
    return {"data": None, "hash": ""}


@st.composite
def region_states(draw: st.DrawFn) -> dict[str, Any]:
    return {
        # region_results.status is NOT NULL (the runner's schema): NULL statuses are drawn for
        # the elements only.
        "status": draw(status_words(allow_null=False)),
        "completed_at": draw(st.sampled_from([None, FINISHED_AT])),
        "error_message": draw(st.sampled_from([None, "", "all executions failed"])),
        "execution_output": draw(execution_outputs()),
        "model_id": draw(st.sampled_from(["llama3.2-1b", None, ""])),
    }


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.integers(0, 9)) == 0:
        return None  # no jobs row
    spec = seed.jobspec(unique_jobspec_id(), regions=["US"], models=["m1"], questions=["q1"])
    model_entry = st.one_of(
        st.sampled_from(MODEL_POOL),
        st.sampled_from(MODEL_POOL).map(lambda m: {"id": m}),
        st.sampled_from(MODEL_POOL).map(lambda m: {"name": m}),
        st.sampled_from([None, "", 5, {"x": 1}, "m" * 51]),
    )
    spec["metadata"]["models"] = draw(
        st.one_of(
            st.lists(model_entry, max_size=4), st.just("m1,m2"), st.just({"m1": True}), st.none()
        )
    )
    spec["metadata"]["model"] = draw(st.sampled_from(["m2", "", None, 3]))
    question_entry = st.one_of(
        st.sampled_from(QUESTION_POOL),
        st.sampled_from(QUESTION_POOL).map(lambda q: {"id": q}),
        st.sampled_from([None, "", 1]),
    )
    spec["questions"] = draw(
        st.one_of(st.lists(question_entry, max_size=3), st.just({"q1": "?"}), st.none())
    )
    return spec


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    spec=specs(),
    first=region_states(),
    second=region_states(),
    second_kind=st.sampled_from(["replace", "append", "noop"]),
    extra=elements_of(),
)
def test_region_results_mirror_property_materialised_rows_equal_the_rule(
    db, spec, first, second, second_kind, extra
):
    if spec is not None:
        make_job(db, jobspec_id=spec["id"], jobspec_data=spec)
        run = make_run(db, jobspec_id=spec["id"])
    else:
        run = make_run(db)
    rr = make_region_result(db, cross_region_execution_id=run["id"], **first)
    if second_kind == "replace":
        db.execute(
            "UPDATE region_results SET status = %s, completed_at = %s, error_message = %s, "
            "execution_output = %s, model_id = %s WHERE id = %s",
            (
                second["status"],
                second["completed_at"],
                second["error_message"],
                Jsonb(second["execution_output"])
                if second["execution_output"] is not None
                else None,
                second["model_id"],
                rr["id"],
            ),
        )
    elif second_kind == "append":
        db.execute(
            "UPDATE region_results SET execution_output = CASE "
            "WHEN jsonb_typeof(execution_output -> 'executions') = 'array' THEN jsonb_set("
            "execution_output, '{executions}', (execution_output -> 'executions') || %s) "
            "ELSE execution_output END WHERE id = %s",
            (Jsonb(extra[:1]), rr["id"]),
        )
    else:
        db.execute("UPDATE region_results SET metadata = metadata WHERE id = %s", (rr["id"],))

    assert db.execute(
        "SELECT count(*) FROM executions WHERE status IS NULL OR status NOT IN "
        "('pending', 'running', 'completed', 'failed', 'cancelled')"
    ).fetchone() == (0,)
    assert_matches_oracle(db, [rr["id"]])
    # Every anomaly the rule reports for the current data has been recorded.
    recorded = set(
        db.execute(
            "SELECT kind, detail FROM region_results_mirror_anomalies WHERE region_result_id = %s",
            (rr["id"],),
        ).fetchall()
    )
    current = set(
        db.execute(
            "SELECT f.anomaly_kind, f.anomaly_detail FROM region_results_mirror_inputs i, "
            "LATERAL region_results_mirror_rows(i.region_result, i.job_id, i.jobspec_data, "
            "i.job_status) f "
            "WHERE i.region_result_id = %s AND f.anomaly_kind IS NOT NULL",
            (rr["id"],),
        ).fetchall()
    )
    assert current <= recorded

    seq, xmins = sequence_state(db), executions_xmins(db)
    counts = apply(db, rr["id"])
    assert counts == {
        "inserted": 0,
        "updated": 0,
        "deleted": 0,
        "detached": 0,
        "left_to_direct": 0,
        "anomalies": 0,
        "states": 0,
        "deferred": 0,
    }
    assert sequence_state(db) == seq
    assert executions_xmins(db) == xmins


# --------------------------------------------------------------------------------------------
# Concurrency: many writers, nothing lost, no deadlock reaching a caller
# --------------------------------------------------------------------------------------------


def test_record_pair_concurrent_writers_lose_nothing(db, connect):
    models = ["m1", "m2", "m3", "m4"]
    questions = ["q1", "q2"]
    regions = ["US", "EU", "ASIA", "APAC", "LATAM"]
    spec = seed.jobspec(unique_jobspec_id(), regions=regions, models=models, questions=questions)
    job_id = writer.create_job(db, spec)
    run_id = writer.start_run(db, spec["id"], regions=regions)
    region_ids = {r: writer.start_region(db, run_id, r) for r in regions}
    all_pairs = [(m, q) for m in models for q in questions]

    # 8 threads, one pair each, into the shared region; 4 threads, each its own region.
    jobs: list[tuple[uuid.UUID, list[tuple[str, str]]]] = [
        (region_ids["US"], [pair]) for pair in all_pairs
    ] + [(region_ids[r], all_pairs) for r in regions[1:]]
    conns = [connect(autocommit=False) for _ in jobs]
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def work(conn: psycopg.Connection[Any], rid: uuid.UUID, todo: list[tuple[str, str]]) -> None:
        try:
            barrier.wait(timeout=30)
            for m, q in todo:
                with conn.transaction():
                    record(conn, rid, m, q, "completed")
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(c, rid, todo))
        for c, (rid, todo) in zip(conns, jobs, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    for region, rid in region_ids.items():
        elements = db.execute(
            "SELECT execution_output -> 'executions' FROM region_results WHERE id = %s", (rid,)
        ).fetchone()[0]
        recorded = sorted((e["model_id"], e["question_id"]) for e in elements)
        assert recorded == sorted(all_pairs), region
        assert set(pairs(db, rid).values()) == {("completed", None, 3)}
        assert sorted(pairs(db, rid)) == sorted(all_pairs)
    assert len(assert_one_row_per_key(db, job_id)) == len(regions) * len(all_pairs)
