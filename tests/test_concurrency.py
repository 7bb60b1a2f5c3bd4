"""The runner's own statements racing each other through the mirror's triggers, two or three
connections at a time, against a real PostgreSQL.

Each test is a narrowed reproduction of what a stress run (4 to 6 connections recording
pairs, inserting and deleting direct rows, cancelling, finishing regions, updating specs,
deleting runs, backfilling) once found:
- two runner cancels of one job waited for each other forever: the mirror, refused a row,
  rolled its attempt back and retried, while holding a lock an earlier row of the same
  statement had taken, so PostgreSQL's deadlock detector never saw it waiting;
- a run's DELETE and its job's spec UPDATE took two regions' locks in opposite orders;
- a region result deleted with no mirrored row of its own (every pair owned by direct rows)
  took no lock, so a mirror write that had listed it landed after the delete (a foreign-key
  violation on a runner write, or a mirror state of nothing: drift with no trigger skipped).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
from factories import make_direct_execution, small_spec
from helpers import T0, hold_mirror_lock, wait_blocked_or_done
from oracle import assert_matches_oracle
from psycopg.types.json import Jsonb

from beaconsql import backfill, verify, writer

CANCEL = (
    "UPDATE executions SET status = 'cancelled' WHERE job_id = %s "
    "AND status IN ('pending', 'running')"
)


class Background(threading.Thread):
    """Run statement(conn) on an autocommit connection of its own; keep its error."""

    def __init__(self, dsn: str, statement: Callable[[psycopg.Connection[Any]], object]) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.statement = statement
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.statement(self.conn)
        except psycopg.Error as exc:
            self.error = exc


def lock_key(conn: psycopg.Connection[Any], job_id: int, region: str) -> str:
    row = conn.execute("SELECT executions_mirror_lock_key(%s, %s, NULL)", (job_id, region))
    return str(row.fetchone()[0])  # type: ignore[index]


def record_running(conn: psycopg.Connection[Any], region_result_id: Any) -> None:
    """A pair recorded running (the writer's element): a row the mirror stores."""
    writer.record_pair(
        conn, region_result_id, model_id="m1", question_id="q1", status="running", started_at=T0
    )


def test_two_runner_cancels_of_one_job_never_wait_forever(db, dsn, connect):
    """Cancel A detaches M1 and its claim must delete M3 (same key, another region result),
    which a third session holds. The mirror never waits for M3 while holding its locks beyond a
    moment: A defers M3 (its region result left not mirrored, for a backfill) and completes;
    cancel B, of a new region result's row M2, then completes too. Neither is aborted; a
    backfill then leaves no drift. (Once: the mirror retried while holding M1, and with B
    waiting for M1 one cancel was aborted as a deadlock, or both waited forever.)"""
    other = writer.create_job(db, small_spec(["m9"], ["q9"]))
    filler = make_direct_execution(db, job_id=other, model_id="m9", question_id="q9")
    spec = small_spec(["m1"], ["q1"])
    job = writer.create_job(db, spec)
    run = writer.start_run(db, spec["id"], regions=["US"], started_at=T0)
    r1 = writer.start_region(db, run, "US", provider_id="p", started_at=T0)
    record_running(db, r1)
    r3 = writer.start_region(db, run, "US", provider_id="p", started_at=T0)
    writer.record_pair(
        db,
        r3,
        model_id="m1",
        question_id="q1",
        status="completed",
        started_at=T0,
        completed_at=T0 + timedelta(seconds=3),
        output={"response": "x"},
    )
    db.execute("DELETE FROM executions WHERE id = %s", (filler["id"],))
    m1, m3 = (
        db.execute("SELECT id FROM executions WHERE mirror_region_result_id = %s", (r,)).fetchone()[
            0
        ]  # type: ignore[index]
        for r in (r1, r3)
    )
    # M1 to the end of the heap (a column the mirror does not own: it stays mirrored), and
    # the slots before it freed, so that the next region result's row lands in front of it.
    for _ in range(3):
        db.execute(
            "UPDATE executions SET retry_count = coalesce(retry_count, 0) + 1 WHERE id = %s",
            (m1,),
        )
    db.execute("VACUUM executions")
    holder = connect(autocommit=False)
    holder.execute("SELECT 1 FROM executions WHERE id = %s FOR UPDATE", (m3,))
    a = Background(dsn, lambda conn: conn.execute(CANCEL, (job,)))
    a.start()
    a.join(5)  # it does not wait for M3, which the holder keeps
    assert not a.is_alive() and a.error is None
    assert db.execute(
        "SELECT r_xmin FROM region_results_mirror_state WHERE region_result_id = %s", (r3,)
    ).fetchone() == (None,)  # M3 deferred: r3 is not mirrored until applied again
    record_running(db, writer.start_region(db, run, "US", provider_id="p", started_at=T0))  # M2
    b = Background(dsn, lambda conn: conn.execute(CANCEL, (job,)))
    b.start()
    b.join(5)
    assert not b.is_alive() and b.error is None
    holder.commit()
    for t in (a, b):
        t.conn.close()
    assert backfill.backfill(db).complete
    assert verify.verify(db).exit_code == 0
    assert_matches_oracle(db)


def test_run_delete_and_spec_update_take_region_locks_in_one_order(db, dsn):
    """A run's DELETE (its region results go one by one) against its job's spec UPDATE
    (every region result re-mirrored), region results inserted against the locks' key order:
    both always succeed. (Once: half the updates failed as deadlocks.)"""
    spec = small_spec(["m1", "m2"], ["q1", "q2"])
    job = writer.create_job(db, spec)
    regions = sorted(["US", "EU"], key=lambda r: lock_key(db, job, r), reverse=True)
    outcomes: Counter[str] = Counter()
    for i in range(10):
        runs = []
        for _ in range(2):
            run = writer.start_run(db, spec["id"], regions=regions, started_at=T0)
            for region in regions:
                writer.start_region(db, run, region, provider_id="p", started_at=T0)
            runs.append(run)
        new_spec = small_spec(
            ["m1", "m2"] if i % 2 else ["m1"], ["q1", "q2"], jobspec_id=spec["id"]
        )
        start = threading.Barrier(2)

        def delete_run(
            conn: psycopg.Connection[Any], run: Any = runs[0], start: Any = start
        ) -> None:
            start.wait()
            conn.execute("DELETE FROM cross_region_executions WHERE id = %s", (run,))

        def update_spec(
            conn: psycopg.Connection[Any], data: Any = new_spec, start: Any = start
        ) -> None:
            start.wait()
            conn.execute("UPDATE jobs SET jobspec_data = %s WHERE id = %s", (Jsonb(data), job))

        both = [Background(dsn, delete_run), Background(dsn, update_spec)]
        for t in both:
            t.start()
        for t in both:
            t.join(30)
            outcomes[type(t.error).__name__ if t.error else "ok"] += 1
            t.conn.close()
        db.execute("DELETE FROM cross_region_executions WHERE id = ANY(%s)", (runs,))
    assert outcomes == {"ok": 20}
    assert verify.verify(db).exit_code == 0
    assert_matches_oracle(db)


def test_region_result_delete_takes_its_region_lock_without_rows_of_its_own(db, dsn, connect):
    """A region result all of whose pairs are owned by direct rows has no mirrored row; its
    DELETE still waits for its (job_id, region) lock, so a mirror write holding it (which may
    have listed the region result) finishes first and its writes are undone by the delete:
    no mirrored row or state is left of it."""
    spec = small_spec(["m1"], ["q1"])
    job = writer.create_job(db, spec)
    run = writer.start_run(db, spec["id"], regions=["US"], started_at=T0)
    make_direct_execution(db, job_id=job, model_id="m1", question_id="q1")
    rid = writer.start_region(db, run, "US", provider_id="p", started_at=T0)
    assert db.execute(
        "SELECT count(*) FROM executions WHERE mirror_region_result_id = %s", (rid,)
    ).fetchone() == (0,)
    holder = connect(autocommit=False)
    hold_mirror_lock(holder, job, "US")
    delete = Background(
        dsn, lambda conn: conn.execute("DELETE FROM region_results WHERE id = %s", (rid,))
    )
    delete.start()
    wait_blocked_or_done(connect(), delete.pid, delete)
    assert delete.is_alive()
    holder.commit()
    delete.join(10)
    assert not delete.is_alive() and delete.error is None
    delete.conn.close()
    assert db.execute(
        "SELECT count(*) FROM region_results_mirror_state WHERE region_result_id = %s", (rid,)
    ).fetchone() == (0,)
    assert verify.verify(db).exit_code == 0
