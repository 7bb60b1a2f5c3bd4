"""The mirror's apply step: the rule's rows materialised into executions (SPEC "Materialising
the rule into executions": a direct row owns its key, serialisation under two connections in
both orders, idempotent and quiet, the transparency log's references; docs/mirror.md "Locks":
what the mirror cannot lock at once it defers, never waits for).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from factories import (
    FINISHED_AT,
    NAIVE_FINISH,
    NAIVE_START,
    STARTED_AT,
    element,
    job_and_run,
    make_direct_execution,
    make_region_result,
    make_run,
    record,
    record_running,
    small_spec,
    unique_jobspec_id,
    writer_region,
)
from helpers import (
    NOTHING_APPLIED,
    RUNNER_CANCEL,
    anomaly_kinds,
    apply,
    assert_one_row_per_key_of_job,
    executions_xmins,
    fetch,
    job_rows,
    keys_of,
    mirrored,
    pairs,
    region_exists,
    run_blocking,
    scalar,
    sequence_state,
    shown_pairs,
    triggers_skipped,
    wait_blocked_or_done,
)
from psycopg.types.json import Jsonb

from beaconsql import backfill, seed, verify, writer

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
    rows = assert_one_row_per_key_of_job(db, job["id"])
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
    rows = assert_one_row_per_key_of_job(db, job["id"])
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
    rows = assert_one_row_per_key_of_job(db, job_id)
    assert len(rows) == 4
    assert set(pairs(db, rid)) == {("m1", "q1"), ("m1", "q2"), ("m2", "q2")}
    owner = next(r for r in rows if (r["model_id"], r["question_id"]) == ("m2", "q1"))
    assert owner["id"] == direct["id"]
    # A later region update (finish) does not bring the mirrored row back.
    writer.finish_region(db, rid, completed_at=FINISHED_AT)
    assert len(assert_one_row_per_key_of_job(db, job_id)) == 4
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
    assert len(assert_one_row_per_key_of_job(db, job_id)) == 2


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
# Races: two connections, READ COMMITTED, both orders; what the mirror cannot lock it defers
# --------------------------------------------------------------------------------------------


def tx_connection(connect: Callable[..., psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
    conn = connect(autocommit=False)
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    return conn


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

    rows = assert_one_row_per_key_of_job(db, job_id)
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
    rows = assert_one_row_per_key_of_job(db, job["id"])
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
    assert len(assert_one_row_per_key_of_job(db, job_id)) == 2
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
    rows = assert_one_row_per_key_of_job(db, job_id)
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


def start_runner_cancel(
    db: psycopg.Connection[Any],
    connect: Callable[..., psycopg.Connection[Any]],
    job_id: int,
    errors: list[BaseException],
) -> threading.Thread:
    """Start the runner's cancel of *job_id* in a thread, on an autocommit connection of its
    own that visits rows in heap order (planner settings only, not a mirror switch), and
    return once it waits for a lock or is done; its error goes to *errors*."""
    runner = connect()
    runner.execute("SET enable_indexscan = off")
    runner.execute("SET enable_bitmapscan = off")

    def cancel() -> None:
        try:
            runner.execute(RUNNER_CANCEL, (job_id,))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=cancel)
    thread.start()
    wait_blocked_or_done(db, runner.info.backend_pid, thread)
    return thread


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
    observer = connect(autocommit=False)
    errors: list[BaseException] = []

    def record_us() -> None:
        try:
            record(w2, us, "m1", "q1")
            w2.commit()
        except BaseException as exc:
            errors.append(exc)
            w2.rollback()

    record(w1, eu, "m2", "q1")
    t_cancel = start_runner_cancel(db, connect, job_id, errors)
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
    rows = assert_one_row_per_key_of_job(db, job_id)
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
    observer = connect(autocommit=False)
    errors: list[BaseException] = []

    record(w, rid, "m1", "q1")
    t_cancel = start_runner_cancel(db, connect, job_id, errors)
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
    writer_conn = connect()
    observer = connect(autocommit=False)
    errors: list[BaseException] = []

    def finish() -> None:
        try:
            writer.finish_region(writer_conn, rid, completed_at=FINISHED_AT)
        except BaseException as exc:
            errors.append(exc)

    t_cancel = start_runner_cancel(db, connect, job_id, errors)
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
    rows = assert_one_row_per_key_of_job(db, job_id)
    assert {(r["status"], r["mirror_region_result_id"]) for r in rows} == {("cancelled", None)}
    assert pairs(db, rid) == {}
    assert backfill.backfill(db).complete
    assert verify.verify(db).exit_code == 0


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
    with triggers_skipped(conn, ("region_results",)):
        conn.execute("DELETE FROM region_results WHERE id = %s", (rid,))


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
    assert_one_row_per_key_of_job(db, job_id)
    assert [(r["model_id"], r["question_id"]) for r in mirrored(db, rid)] == []
    assert direct["id"] in {r["id"] for r in job_rows(db, job_id)}


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
        assert counts == NOTHING_APPLIED
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
    with triggers_skipped(db, ("region_results",)):
        db.execute(
            "UPDATE region_results SET status = 'success', completed_at = %s, "
            "execution_output = %s WHERE id = %s",
            (FINISHED_AT, Jsonb({"executions": [element("m2", "q1")]}), rr["id"]),
        )
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


@pytest.mark.parametrize("one_transaction", [True, False])
def test_the_state_says_finished_once_the_region_result_is(db, one_transaction):
    """A region result started and finished in one transaction keeps one xmin: the state was
    recorded at its start (not finished) and was not recorded again at its finish."""
    spec = small_spec(models=("m1",), questions=("q1",))
    with db.transaction() if one_transaction else nullcontext():
        _, _, rid = writer_region(db, spec)
        writer.record_pair(db, rid, model_id="m1", question_id="q1", status="completed")
        writer.finish_region(db, rid, completed_at=FINISHED_AT)
    finished = scalar(
        db, "SELECT finished FROM region_results_mirror_state WHERE region_result_id = %s", (rid,)
    )
    assert finished is True


def test_region_results_mirror_append_after_triggers_were_disabled_rederives_region(db):
    spec = small_spec(models=("m1", "m2", "m3", "m4"), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1")
    # Written while the mirror was off: the region finished, m2 recorded.
    with triggers_skipped(db, ("region_results",)):
        writer.record_pair(
            db, rid, model_id="m2", question_id="q1", status="failed", error="skipped write"
        )
        db.execute(
            "UPDATE region_results SET status = 'success', completed_at = %s WHERE id = %s",
            (FINISHED_AT, rid),
        )
    assert ("m2", "q1") not in pairs(db, rid)  # not mirrored: nothing stored for it yet
    # The next append must not take the per-element shortcut over a stale state.
    record(db, rid, "m3", "q1")
    assert pairs(db, rid) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m2", "q1"): ("failed", "skipped write", 3),
        ("m3", "q1"): ("completed", None, 3),
        ("m4", "q1"): ("failed", "no result recorded", 1),
    }
    # The region's finish is read too: m4, never recorded, ended with it.
    assert {r["completed_at"] for r in mirrored(db, rid) if r["model_id"] == "m4"} == {NAIVE_FINISH}
    assert apply(db, rid)["updated"] == 0


def test_region_results_mirror_append_after_spec_changed_with_triggers_disabled(db):
    spec = small_spec(models=("m1",), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    spec["questions"] = ["q1", "q2"]
    with triggers_skipped(db, ("jobs",)):
        db.execute("UPDATE jobs SET jobspec_data = %s WHERE id = %s", (Jsonb(spec), job_id))
    assert pairs(db, rid) == {}
    record(db, rid, "m1", "q1")
    assert pairs(db, rid) == {("m1", "q1"): ("completed", None, 3)}
    assert shown_pairs(db, rid) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m1", "q2"): ("running", None, 1),
    }


def test_mirror_writes_name_exactly_the_columns_the_mirror_owns():
    """executions_mirror_insert and _update name the columns of executions_mirror_row, the one
    list of what the mirror owns, in its order (SPEC "Columns the mirror owns")."""
    from beaconsql.sqlfiles import read_sql

    types = read_sql("mirror/rule/executions_mirror_types.v1.sql")
    row_type = types[types.index("CREATE TYPE public.executions_mirror_row AS (") :]
    owned = re.findall(r"^\s+(\w+) [a-z]", row_type[: row_type.index(");")], re.MULTILINE)
    assert owned[:2] == ["job_id", "cross_region_execution_id"] and len(owned) == 15
    writes = read_sql("mirror/apply/executions_mirror_write.v1.sql")
    lists = re.findall(r"(?:INSERT INTO public\.executions|SET) \(([^)]*)\)", writes)
    assert len(lists) == 2
    for columns in lists:
        assert [c.strip() for c in columns.split(",")] == owned
