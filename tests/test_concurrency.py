"""Many writers through the mirror at once (SPEC "Materialising the rule into executions": no
runner statement aborted by the mirror; "The writer"): the runner's own statements racing each
other two or three connections at a time, each a narrowed reproduction of what a stress run
once found; concurrent writers losing nothing; and the load runs (marked ``slow``: 4 writers
x ``BEACONSQL_LOAD_RUNS`` runs, default 150, with and without a backfill / verify loop).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import stress
from factories import (
    element,
    make_direct_execution,
    record,
    record_running,
    small_spec,
    unique_jobspec_id,
)
from helpers import (
    RUNNER_CANCEL,
    T0,
    assert_no_constraint_violation,
    assert_one_row_per_key_of_job,
    cli_run,
    hold_mirror_lock,
    pairs,
    scalar,
    wait_blocked_or_done,
)
from oracle import assert_exact, assert_matches_oracle
from psycopg.types.json import Jsonb

from beaconsql import backfill, seed, verify, writer

# Runs per writer of the load tests (500 for the full size: more than 90 s a variant on a
# small machine).
LOAD_RUNS = int(os.environ.get("BEACONSQL_LOAD_RUNS", "150"))


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


# --------------------------------------------------------------------------------------------
# The runner's statements racing each other
# --------------------------------------------------------------------------------------------


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
    record_running(db, r1, ("m1", "q1"))
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
    a = Background(dsn, lambda conn: conn.execute(RUNNER_CANCEL, (job,)))
    a.start()
    a.join(5)  # it does not wait for M3, which the holder keeps
    assert not a.is_alive() and a.error is None
    assert db.execute(
        "SELECT r_xmin FROM region_results_mirror_state WHERE region_result_id = %s", (r3,)
    ).fetchone() == (None,)  # M3 deferred: r3 is not mirrored until applied again
    m2_region = writer.start_region(db, run, "US", provider_id="p", started_at=T0)
    record_running(db, m2_region, ("m1", "q1"))  # M2
    b = Background(dsn, lambda conn: conn.execute(RUNNER_CANCEL, (job,)))
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


def run_of_rows(
    db: psycopg.Connection[Any], models: list[str], questions: list[str], status: str
) -> tuple[int, uuid.UUID, list[int]]:
    """A job of *models* x *questions* with one run in US, its region result holding every pair
    at *status* (written at once): the job's id, the run's, and its executions rows' ids in id
    order."""
    spec = small_spec(models, questions, regions=("US",))
    job = writer.create_job(db, spec)
    run = writer.start_run(db, spec["id"], regions=["US"], started_at=T0)
    rid = writer.start_region(db, run, "US", provider_id="p", started_at=T0)
    finished = {} if status == "completed" else {"completed_at": None, "output": None}
    db.execute(
        "UPDATE region_results SET execution_output = jsonb_build_object('executions', %s) "
        "WHERE id = %s",
        (Jsonb([element(m, q, status, **finished) for m in models for q in questions]), rid),
    )
    ids = [
        r[0]
        for r in db.execute(
            "SELECT id FROM executions WHERE cross_region_execution_id = %s ORDER BY id", (run,)
        ).fetchall()
    ]
    assert len(ids) == len(models) * len(questions)
    return job, run, ids


def deleting_run(dsn: str, run: uuid.UUID) -> Background:
    """The run's DELETE, started on a connection of its own."""
    delete = Background(
        dsn, lambda conn: conn.execute("DELETE FROM cross_region_executions WHERE id = %s", (run,))
    )
    delete.start()
    return delete


def test_run_delete_never_waits_for_a_row_while_holding_others_of_its_run(db, dsn, connect):
    """The runner's cancel locks a job's rows in its scan order; a run's DELETE must lock the
    run's rows, in its own order. A cancel holding row B and then wanting row A, against a
    DELETE of the run that waits for B: once the cancel waits for A, the DELETE lets go of A
    and waits for B alone, so the cancel goes on, and then the DELETE does. Neither is
    aborted. (Once: the DELETE kept A while waiting for B, and one of the two was aborted as a
    deadlock, about once in 7,000 statements of a stress run.)"""
    job, run, (row_a, row_b) = run_of_rows(db, ["m1"], ["q1", "q2"], "running")
    cancel = connect(autocommit=False)
    cancel.execute("SELECT 1 FROM executions WHERE id = %s FOR UPDATE", (row_b,))
    delete = deleting_run(dsn, run)
    wait_blocked_or_done(connect(), delete.pid, delete)
    assert delete.is_alive()  # waiting for B
    cancel.execute("SET lock_timeout = '5s'")  # a wait for A fails the test, not the session
    assert cancel.execute(RUNNER_CANCEL, (job,)).rowcount == 2
    cancel.commit()
    delete.join(10)
    assert not delete.is_alive() and delete.error is None
    delete.conn.close()
    assert db.execute(
        "SELECT status FROM executions WHERE id = ANY(%s)", ([row_a, row_b],)
    ).fetchall() == [("cancelled",), ("cancelled",)]
    assert verify.verify(db).exit_code == 0
    assert_matches_oracle(db)


def test_run_delete_keeps_its_rows_while_the_holder_of_another_waits_for_nothing(db, dsn, connect):
    """A writer holds row C of a run and waits for nothing: the run's DELETE keeps rows A and B
    while it waits for C (only a holder that may be waiting for it makes it let go), and goes
    on when C is let go. (Once: it let go of everything after 20 ms each time, and writers
    each holding a row 300 ms at a time held it back until they stopped.)"""
    _, run, (row_a, row_b, row_c) = run_of_rows(db, ["m1"], ["q1", "q2", "q3"], "running")
    holder = connect(autocommit=False)
    holder.execute("SELECT 1 FROM executions WHERE id = %s FOR UPDATE", (row_c,))
    delete = deleting_run(dsn, run)
    observer = connect()
    wait_blocked_or_done(observer, delete.pid, delete)
    time.sleep(0.2)  # ten moments, within half of deadlock_timeout (1 s)
    for row in (row_a, row_b):
        with pytest.raises(psycopg.errors.LockNotAvailable):
            observer.execute("SELECT 1 FROM executions WHERE id = %s FOR UPDATE NOWAIT", (row,))
    assert delete.is_alive()
    holder.commit()
    delete.join(10)
    assert not delete.is_alive() and delete.error is None
    delete.conn.close()
    assert db.execute(
        "SELECT count(*) FROM executions WHERE id = ANY(%s)", ([row_a, row_b, row_c],)
    ).fetchone() == (0,)


@pytest.mark.slow
def test_run_delete_completes_while_writers_of_single_rows_keep_updating_its_rows(db, dsn):
    """A run of 5,000 rows, 12 connections updating one random row of it at a time: the run's
    DELETE completes while they go on (it keeps the rows it has taken and waits for the others
    a moment each). (Once: it took all of them at once or none, and with every attempt some
    row was held elsewhere: it waited until the writers stopped.)"""
    _, run, ids = run_of_rows(
        db, [f"m{i}" for i in range(100)], [f"q{i}" for i in range(50)], "completed"
    )
    deadline = time.monotonic() + 60
    stop = threading.Event()
    errors: list[Exception] = []

    def update_rows(seed_: int) -> None:
        rng = random.Random(seed_)
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set() and time.monotonic() < deadline:
                try:  # a column the mirror does not own: the row stays mirrored
                    conn.execute(
                        "UPDATE executions SET retry_count = retry_count + 1 WHERE id = %s",
                        (rng.choice(ids),),
                    )
                except psycopg.Error as exc:
                    errors.append(exc)

    writers = [threading.Thread(target=update_rows, args=(i,), daemon=True) for i in range(12)]
    for t in writers:
        t.start()
    time.sleep(1)
    delete = deleting_run(dsn, run)
    delete.join(deadline - time.monotonic())
    finished_while_writing = not delete.is_alive() and all(t.is_alive() for t in writers)
    stop.set()
    for t in writers:
        t.join()
    delete.join()
    delete.conn.close()
    assert finished_while_writing
    assert delete.error is None and errors == []
    assert db.execute("SELECT count(*) FROM executions WHERE id = ANY(%s)", (ids,)).fetchone() == (
        0,
    )
    assert verify.verify(db).exit_code == 0


def test_region_result_delete_takes_its_region_lock_without_rows_of_its_own(db, dsn, connect):
    """A region result all of whose pairs are owned by direct rows has no mirrored row; its
    DELETE still waits for its (job_id, region) lock, so a mirror write holding it (which may
    have listed the region result) finishes first and its writes are undone by the delete:
    no mirrored row or state is left of it. (Once: it took no lock, so a mirror write that had
    listed it landed after the delete: a foreign-key violation on a runner write, or a mirror
    state of nothing, drift with no trigger skipped.)"""
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


# --------------------------------------------------------------------------------------------
# Many writers, nothing lost, no deadlock reaching a caller
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
    assert len(assert_one_row_per_key_of_job(db, job_id)) == len(regions) * len(all_pairs)


# --------------------------------------------------------------------------------------------
# Load: 4 writers x LOAD_RUNS runs, with and without a concurrent backfill / verify loop
# --------------------------------------------------------------------------------------------

STATEMENTS_PER_RUN = 1 + 1 + 2 * (1 + 9 + 1) + 2  # job, run, 2 x (region, 9 pairs, finish), end


@pytest.mark.slow
@pytest.mark.parametrize(
    "concurrent", [False, True], ids=["writers-only", "with-backfill-and-verify"]
)
def test_load_four_writers_through_the_writer(
    db: psycopg.Connection[Any], dsn: str, concurrent: bool, record_property: Any
) -> None:
    """4 threads, each recording LOAD_RUNS runs (2 regions x 3 models x 3 questions, every pair
    completed) through beaconsql.writer, one statement per transaction; with ``concurrent``,
    ``beaconsql backfill`` and ``beaconsql verify`` run in a loop meanwhile. No writer gets an
    error (no deadlock reaches one); every concurrent backfill and verify exits 0; afterwards
    verify exits 0 and executions equals the rule for every region result (no direct rows
    here). The throughput held is printed and recorded as test properties."""
    writers = 4
    errors: list[BaseException] = []
    elapsed: dict[int, float] = {}
    writers_done = threading.Event()
    loops: dict[str, list[tuple[int, str]]] = {"backfill": [], "verify": []}
    start_line = threading.Barrier(writers + 1)

    def record_runs(k: int) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                start_line.wait(timeout=60)
                started = time.monotonic()
                for i in range(LOAD_RUNS):
                    seed.record_with_writer(
                        conn,
                        seed.jobspec(f"load-{k}-{i}"),
                        started_at=T0 + timedelta(minutes=i),
                    )
                elapsed[k] = time.monotonic() - started
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    def loop(name: str, args: list[str]) -> None:
        while not writers_done.is_set():
            done = cli_run([*args, "--dsn", dsn], timeout=300)
            loops[name].append((done.returncode, (done.stdout + done.stderr)[-600:]))

    threads = [threading.Thread(target=record_runs, args=(k,)) for k in range(writers)]
    helpers = []
    if concurrent:
        helpers = [
            threading.Thread(target=loop, args=("backfill", ["backfill", "--batch-size", "200"])),
            threading.Thread(target=loop, args=("verify", ["verify", "--json"])),
        ]
    for t in threads + helpers:
        t.start()
    start_line.wait(timeout=60)
    wall_start = time.monotonic()
    for t in threads:
        t.join(timeout=900)
    wall = time.monotonic() - wall_start
    writers_done.set()
    for t in helpers:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads + helpers)
    assert errors == [], errors

    runs = writers * LOAD_RUNS
    label = "with backfill + verify" if concurrent else "writers only"
    per_writer = [LOAD_RUNS / elapsed[k] for k in range(writers)]
    figures = {
        "runs": runs,
        "wall_seconds": round(wall, 2),
        "runs_per_second": round(runs / wall, 1),
        "statements_per_second": round(runs * STATEMENTS_PER_RUN / wall),
        "runs_per_second_per_writer": [round(r, 1) for r in per_writer],
        "backfill_runs": len(loops["backfill"]),
        "verify_runs": len(loops["verify"]),
    }
    print(f"\nload, {label}: {json.dumps(figures)}")
    for key, value in figures.items():
        record_property(f"load_{'concurrent' if concurrent else 'quiet'}_{key}", value)

    if concurrent:
        assert loops["backfill"] and loops["verify"], loops
        assert [c for c, _ in loops["backfill"] if c != 0] == [], loops["backfill"]
        assert [c for c, _ in loops["verify"] if c != 0] == [], loops["verify"]
    checked = cli_run(["verify", "--dsn", dsn, "--json"], timeout=300)
    assert checked.returncode == 0, checked.stdout[-3000:]
    report = json.loads(checked.stdout)
    assert report["drift"] is False and report["region_results_examined"] == runs * 2
    assert scalar(db, "SELECT count(*) FROM executions WHERE mirror_region_result_id IS NULL") == 0
    assert assert_exact(db) == runs * 18
    assert scalar(db, "SELECT count(*) FROM executions WHERE status <> 'completed'") == 0
    assert_no_constraint_violation(db)


@pytest.mark.slow
def test_stress_the_runners_statements_on_the_same_jobs(db, dsn):
    """SPEC "No runner statement aborted by the mirror": the runner's statement mix on the
    same jobs (tests/stress.py) aborts none as a deadlock, lock or statement timeout, none
    hangs; afterwards a backfill leaves verify at 0 and executions equal to the oracle.
    `make stress` runs it at 8 threads x 120 s; CI at BEACONSQL_STRESS_* or 4 x 20 s."""
    out = stress.run(
        dsn,
        threads=int(os.environ.get("BEACONSQL_STRESS_THREADS", "4")),
        seconds=float(os.environ.get("BEACONSQL_STRESS_SECONDS", "20")),
    )
    print("\n" + out.summary())
    assert out.mirror_aborts == 0 and out.hangs == 0, out.summary()
    assert sum(out.statements.values()) > 100
    assert backfill.backfill(db).complete
    report = verify.verify(db)
    assert report.exit_code == 0, report.to_dict()
    assert_matches_oracle(db)
