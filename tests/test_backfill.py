"""`beaconsql backfill` against a real PostgreSQL (SPEC "Materialising the rule into
executions", esp. "Mirror state"; "Worked example"; issue 5 "Tests" and "Must show").

History is written with the triggers skipped (``ALTER TABLE … DISABLE TRIGGER USER``), then
backfilled, and ``executions`` is compared with an independent oracle: a small Python
re-implementation of the SPEC's mirror rule for the shapes generated here (runner legacy region
rows, per-pair elements, direct-row ownership). The oracle lives in this module (tests only)
and is shared with tests/test_verify.py.

Tests that assert the contract where the implementation deviates are marked
``xfail(strict=True)`` with the reason; each carries a minimal repro in its docstring.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from conftest import dsn_of
from factories import (
    bulk_expected_counts,
    bulk_stored_rows,
    legacy_output,
    make_direct_execution,
    make_job,
    make_region_result,
    make_run,
    small_spec,
    unique_jobspec_id,
    write_bulk_legacy,
    write_history,
)
from helpers import (
    REPO,
    T0,
    UNREACHABLE_DSN,
    assert_one_mirrored_row_per_key,
    cli,
    cli_env,
    cli_process,
    cli_run,
    fetch,
    hold_mirror_lock,
    last_run,
    mirrored_count,
    new_york,
    not_mirrored,
    region_result_count,
    run_backfill,
    snapshot,
    triggers_skipped,
    view_rows,
    wait_for_batches,
    wait_lock_released,
    waiting_backends,
)
from oracle import NO_RESULT, assert_matches_oracle, oracle, oracle_rule

from beaconsql import backfill, migration, seed, verify
from beaconsql.errors import BackfillBusyError, InvalidArgumentError


def test_oracle_reproduces_the_worked_example() -> None:
    """The oracle itself, on the SPEC's worked example: a legacy region yields 1 completed
    pair (evidence 2) and 8 failed 'no result recorded' (evidence 1)."""
    spec = seed.jobspec("bias-detection-1760366783099")
    r = {
        "id": None,
        "cross_region_execution_id": None,
        "region": "US",
        "provider_id": None,
        "status": "success",
        "started_at": T0,
        "completed_at": T0 + timedelta(seconds=45),
        "execution_output": legacy_output("llama3.2-1b"),
        "error_message": "",
        "model_id": "llama3.2-1b",
    }
    rows = oracle_rule(r, 7, spec)
    assert len(rows) == 9
    assert [k for k, v in rows.items() if v["status"] == "completed"] == [
        ("llama3.2-1b", "greatest_invention")
    ]
    assert {v["original_error"] for k, v in rows.items() if v["status"] == "failed"} == {NO_RESULT}
    assert all(v["provider_id"] == "" for v in rows.values())


def test_backfill_materialises_exactly_the_rule_from_a_new_york_session(db: Any, dsn: str) -> None:
    """History of every shape written with triggers skipped; backfilled from a session whose
    TimeZone is America/New_York: executions equals the oracle, the view is unchanged, the
    summary counts what was written, and direct rows are untouched."""
    history = write_history(db)
    direct_before = fetch(db, "SELECT * FROM executions ORDER BY id")
    view_before = view_rows(db)
    expected_rows = len(oracle(db))

    summary = run_backfill(dsn, batch_size=4)

    assert summary.complete and not summary.resumed and not summary.dry_run
    assert summary.examined == region_result_count(db)
    assert summary.inserted == expected_rows == mirrored_count(db)
    assert (summary.updated, summary.deleted, summary.detached) == (0, 0, 0)
    assert summary.states == region_result_count(db)
    assert summary.left_to_direct == 2 + 4  # keys: direct job 2 (3 rows), timed-out region 4
    assert summary.anomalies > 0
    assert_matches_oracle(db)
    assert_one_mirrored_row_per_key(db)
    assert not_mirrored(db) == set()
    assert (
        fetch(db, "SELECT * FROM executions WHERE mirror_region_result_id IS NULL ORDER BY id")
        == direct_before
    )
    assert view_rows(db) == view_before

    # Spot checks of the SPEC, independent of the oracle.
    rr = history.region_results
    legacy = fetch(
        db,
        "SELECT status, mirror_evidence AS ev, original_error, started_at "
        "FROM executions WHERE job_id = %s",
        (history.job_ids["legacy"],),
    )
    assert Counter((r["status"], r["ev"]) for r in legacy) == {
        ("completed", 2): 2,
        ("failed", 1): 16,
    }
    # Naive UTC whatever the session TimeZone: the region started 17:00 UTC.
    assert {r["started_at"] for r in legacy} == {
        datetime(2025, 10, 12, 17, 0),
        datetime(2025, 10, 12, 17, 1),
    }
    element_rows = {
        (r["model_id"], r["question_id"]): r
        for r in fetch(
            db, "SELECT * FROM executions WHERE mirror_region_result_id = %s", (rr["elements"],)
        )
    }
    assert element_rows[("m-a", "q2")]["started_at"] == datetime(2025, 10, 12, 17, 0)
    assert element_rows[("m-b", "q2")]["completed_at"] == datetime(2025, 10, 12, 18, 0, 4, 500000)
    assert element_rows[("m-b", "q1")]["status"] == "failed"
    assert element_rows[("m-c", "q1")]["original_error"] == NO_RESULT
    assert ("m-x", "q9") in element_rows and ("m" * 51, "q1") not in element_rows
    assert element_rows[("m-a", "q1")]["provider_id"] == ""
    timeout = fetch(
        db,
        "SELECT model_id, question_id, status, original_error, mirror_evidence "
        "FROM executions WHERE job_id = %s AND mirror_region_result_id IS NOT NULL",
        (history.job_ids["timeout"],),
    )
    assert len(timeout) == 5  # worked example: the 5 missing pairs, never the runner's 4
    missing = fetch(
        db,
        "SELECT job_id, model_id, question_id, status FROM executions "
        "WHERE mirror_region_result_id = %s",
        (rr["missing"],),
    )
    assert missing == [
        {
            "job_id": None,
            "model_id": "qwen2.5-1.5b",
            "question_id": "default",
            "status": "completed",
        }
    ]


def test_second_backfill_changes_nothing_and_writes_nothing(db: Any, dsn: str) -> None:
    """A rerun over unchanged data reports zero changes and writes no executions row, no
    mirror state, no anomaly, and consumes no executions_id_seq value; a completed run cleared
    its cursor, so the rerun examines everything again."""
    write_history(db)
    first = run_backfill(dsn, batch_size=7)
    assert first.complete and first.changed > 0
    assert last_run(db)["status"] == "completed" and last_run(db)["cursor"] is None
    before = snapshot(db)

    second = run_backfill(dsn, batch_size=3)

    assert second.complete and not second.resumed
    assert second.examined == first.examined
    assert (second.inserted, second.updated, second.deleted, second.detached) == (0, 0, 0, 0)
    assert (second.changed, second.states, second.anomalies) == (0, 0, 0)
    assert snapshot(db) == before
    assert_matches_oracle(db)


def test_backfill_on_the_runner_database_after_upgrade(runner_db: Any) -> None:
    """Must show: on an adopted runner database with history, backfill materialises exactly
    the rule's rows (none for keys the runner's direct rows own), leaves the view unchanged,
    times in naive UTC from a non-UTC session; a second run changes nothing; verify exits 0;
    after tampering verify exits 3 and backfill repairs it."""
    runner_db.autocommit = True
    dsn = dsn_of(runner_db)
    migration.upgrade(dsn)
    db = runner_db
    assert mirrored_count(db) == 0
    assert len(not_mirrored(db)) == 8
    direct_before = fetch(db, "SELECT * FROM executions ORDER BY id")
    view_before = view_rows(db)

    summary = run_backfill(dsn, batch_size=3)

    assert summary.complete and summary.examined == 8
    # A: 18 (2 completed); B: EU only, 9 (US owned by direct rows); C: 0 (both keys direct);
    # D: 1 (no job); E: 1 (malformed spec: one model, 'default'); F: 0 (running: its 9
    # placeholders are derived by the view, not stored).
    assert summary.inserted == mirrored_count(db) == 29
    assert summary.left_to_direct == 9 + 2  # keys: B's US 9 (11 rows), C's 2
    assert_matches_oracle(db)
    assert_one_mirrored_row_per_key(db)
    assert (
        fetch(db, "SELECT * FROM executions WHERE mirror_region_result_id IS NULL ORDER BY id")
        == direct_before
    )
    assert view_rows(db) == view_before
    by_job = dict(
        db.execute(
            "SELECT coalesce(job_id, 0), count(*) FROM executions "
            "WHERE mirror_region_result_id IS NOT NULL GROUP BY 1"
        ).fetchall()
    )
    assert by_job == {11: 18, 12: 9, 0: 1, 15: 1}
    a1 = fetch(
        db,
        "SELECT started_at, completed_at, created_at FROM executions "
        "WHERE mirror_region_result_id = 'dddddddd-0000-4000-8000-0000000000a1' "
        "AND mirror_evidence = 2",
    )
    assert a1 == [
        {
            "started_at": datetime(2025, 10, 12, 16, 58, 37, 120000),
            "completed_at": datetime(2025, 10, 12, 17, 0, 11, 845000),
            "created_at": datetime(2025, 10, 12, 16, 58, 37, 120000),
        }
    ]

    before = snapshot(db)
    again = run_backfill(dsn)
    assert again.changed == 0 and snapshot(db) == before

    with psycopg.connect(dsn, autocommit=True) as conn:
        report = verify.verify(new_york(conn))
    assert report.exit_code == 0, report.to_dict()
    assert {(d["model_id"], d["question_id"], d["rows"]) for d in report.duplicates} == {
        ("llama3.2-1b", "greatest_invention", 2),
        ("mistral-7b", "tiananmen_neutral", 2),
    }

    # Tamper: a mirrored row deleted by hand; a region result changed while triggers skipped.
    db.execute(
        "DELETE FROM executions WHERE id = (SELECT min(id) FROM executions "
        "WHERE job_id = 11 AND mirror_region_result_id IS NOT NULL)"
    )
    with triggers_skipped(db, ("region_results",)):
        db.execute(
            "UPDATE region_results SET status = 'failed', error_message = 'lost' "
            "WHERE id = 'dddddddd-0000-4000-8000-0000000000f1'"
        )
    assert verify.verify(db).exit_code == 3
    repaired = run_backfill(dsn)
    # the deleted row back, and F's 9 pairs stored now that F is finished
    assert repaired.complete and repaired.inserted == 1 + 9 and repaired.updated == 0
    assert verify.verify(db).exit_code == 0
    assert_matches_oracle(db)


@pytest.mark.parametrize("flavour", ["runner_db_without_007", "runner_db_inline"])
def test_backfill_on_other_runner_databases_after_upgrade(request: Any, flavour: str) -> None:
    """A runner database without the hand-run 007_ (direct rows without question_id: their
    keys are (…, NULL), which no rule row has) and one built by the inline fallback (no
    region results): exact, view unchanged, verify exits 0, a rerun changes nothing."""
    conn = request.getfixturevalue(flavour)
    conn.autocommit = True
    dsn = dsn_of(conn)
    migration.upgrade(dsn)
    view_before = view_rows(conn)
    summary = run_backfill(dsn, batch_size=3)
    assert summary.complete
    assert summary.inserted == assert_matches_oracle(conn) == mirrored_count(conn)
    # the runner database's 29 (its running region's 9 placeholders are derived, not stored) + 9 + 2
    assert summary.inserted == {"runner_db_without_007": 29 + 9 + 2, "runner_db_inline": 0}[flavour]
    assert view_rows(conn) == view_before
    assert verify.verify(conn).exit_code == 0
    assert run_backfill(dsn).changed == 0


# ============================================================================================
# Online
# ============================================================================================


def test_backfill_online_with_four_writers_and_direct_inserts(
    db: Any, dsn: str, connect: Any
) -> None:
    """Backfill running while 4 threads record new runs through the writer (each ending with
    one runner dual-write of a direct row), a fifth makes the runner's direct inserts into
    history keys and a sixth updates and deletes history region results (triggers on, racing
    the batches): no thread fails, verify exits 0 and executions matches the oracle."""
    write_bulk_legacy(db, "online", 60)
    write_history(db)
    total = region_result_count(db)
    done = threading.Event()
    errors: list[BaseException] = []
    recorded: list[int] = []
    during: list[str] = []
    direct_inserted: list[tuple[int, str]] = []
    result: dict[str, backfill.Summary] = {}

    def guarded(fn: Any) -> Any:
        def run(*args: Any) -> None:
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
                errors.append(exc)

        return run

    @guarded
    def backfiller() -> None:
        try:
            result["summary"] = run_backfill(dsn, batch_size=4, sleep=0.03)
        finally:
            done.set()

    @guarded
    def recorder(k: int) -> None:
        conn = connect()
        n = 0
        while n < 2 or (not done.is_set() and n < 15):
            spec = small_spec(["m1", "m2"], ["q1", "q2"], jobspec_id=unique_jobspec_id(f"live{k}"))
            run = seed.record_with_writer(conn, spec, started_at=T0 + timedelta(hours=n))
            assert run.job_id is not None
            # The runner's dual write of one pair arrives after the mirror's row.
            make_direct_execution(
                conn, job_id=run.job_id, region="US", model_id="m1", question_id="q2"
            )
            recorded.append(run.job_id)
            if not done.is_set():
                during.append(spec["id"])
            n += 1

    @guarded
    def direct_inserter() -> None:
        conn = connect()
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM jobs WHERE jobspec_id LIKE 'online-%%' ORDER BY id"
            )
        ]
        for k, job_id in enumerate(ids):
            if done.is_set() and k >= 10:
                break
            region = "US" if k % 2 else "EU"
            model = ("llama3.2-1b", "mistral-7b", "qwen2.5-1.5b")[k % 3]
            make_direct_execution(
                conn, job_id=job_id, region=region, model_id=model, question_id="greatest_invention"
            )
            direct_inserted.append((job_id, region))
            time.sleep(0.005)

    @guarded
    def runner_updates() -> None:
        conn = connect()
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT r.id FROM region_results r JOIN cross_region_executions x "
                "ON x.id = r.cross_region_execution_id WHERE x.jobspec_id LIKE 'online-%%' "
                "ORDER BY r.id DESC"
            )
        ]
        for k, rid in enumerate(ids[::3]):
            if done.is_set() and k >= 10:
                break
            if k % 4 == 3:
                conn.execute("DELETE FROM region_results WHERE id = %s", (rid,))
            else:
                conn.execute(
                    "UPDATE region_results SET status = 'failed', completed_at = "
                    "coalesce(completed_at, started_at + interval '1 minute'), "
                    "error_message = 'late failure' WHERE id = %s",
                    (rid,),
                )
            time.sleep(0.01)

    threads = [threading.Thread(target=backfiller)]
    threads += [threading.Thread(target=recorder, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=direct_inserter), threading.Thread(target=runner_updates)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == [], errors
    summary = result["summary"]
    assert summary.complete and not summary.resumed
    assert summary.examined >= total - 20  # up to the high-water mark (some were deleted)
    assert len(recorded) >= 8 and len(during) >= 4 and len(direct_inserted) >= 10

    report = verify.verify(db)
    assert report.exit_code == 0, report.to_dict()["findings"][:10]
    assert not_mirrored(db) == set()
    assert_matches_oracle(db)
    assert_one_mirrored_row_per_key(db)
    for job_id in recorded:
        rows = fetch(
            db,
            "SELECT region, model_id, question_id, mirror_region_result_id IS NULL "
            "AS direct FROM executions WHERE job_id = %s",
            (job_id,),
        )
        assert len(rows) == 8 and sum(r["direct"] for r in rows) == 1


# ============================================================================================
# Crash, stop, resume, single runner
# ============================================================================================


def test_sigkill_then_rerun_resumes_and_is_exact(db: Any, dsn: str) -> None:
    """SIGKILL the backfill process after a few batches; a rerun resumes from the cursor
    (summary resumed, counts of the whole run), the result is exact, no duplicate rows."""
    write_bulk_legacy(db, "crash", 40)
    write_history(db)
    total = region_result_count(db)
    proc = cli_process(["backfill", "--dsn", dsn, "--batch-size", "5", "--sleep", "0.2"])
    try:
        seen = wait_for_batches(db, proc, 3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed = last_run(db)
    assert killed["status"] == "running" and killed["cursor"] is not None
    assert seen <= killed["batches"] < total // 5
    done_before = killed["examined"]
    assert 0 < done_before < total
    wait_lock_released(db)
    # Recorded 'running', but no live session holds its lease: status says interrupted.
    assert backfill.last_runs(db)["unfinished"]["status"] == "interrupted"

    result = cli(["backfill", "--dsn", dsn, "--batch-size", "50", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["resumed"] is True and summary["complete"] is True
    assert summary["run_id"] == killed["id"]
    assert summary["examined"] == total
    assert summary["inserted"] == mirrored_count(db)
    assert last_run(db)["status"] == "completed"
    assert_matches_oracle(db)
    assert_one_mirrored_row_per_key(db)
    assert verify.verify(db).exit_code == 0


def backfill_waiting_mid_batch(
    db: Any, dsn: str, connect: Any
) -> tuple[list[dict[str, Any]], psycopg.Connection[Any], subprocess.Popen[str]]:
    """Start `beaconsql backfill --batch-size 5` as a process while another connection holds
    the (job_id, region) lock of the middle region result, and return once the backfill waits
    for it inside a batch transaction: (the region results in key order, the holder, the
    process)."""
    ordered = fetch(
        db,
        "SELECT i.region_result_id AS id, i.job_id, i.region "
        "FROM region_results_mirror_inputs i ORDER BY 1",
    )
    target = ordered[len(ordered) // 2]
    holder = connect(autocommit=False)
    hold_mirror_lock(holder, target["job_id"], target["region"], target["id"])
    proc = cli_process(["backfill", "--dsn", dsn, "--batch-size", "5"])
    deadline = time.monotonic() + 60
    while not waiting_backends(db):
        if proc.poll() is not None or time.monotonic() >= deadline:
            proc.kill()
            raise AssertionError(proc.communicate())
        time.sleep(0.005)
    return ordered, holder, proc


def test_sigkill_inside_a_batch_transaction_leaves_nothing_half_done(
    db: Any, dsn: str, connect: Any
) -> None:
    """SIGKILL while a batch transaction is open (the backfill waits inside it for a
    (job_id, region) lock a writer holds): the batch is rolled back whole; the rerun resumes
    from the last saved batch and the result is exact, without duplicates."""
    write_bulk_legacy(db, "midkill", 30)
    total = region_result_count(db)
    ordered, holder, proc = backfill_waiting_mid_batch(db, dsn, connect)
    try:
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    holder.rollback()
    killed = last_run(db)
    assert killed["status"] == "running"
    assert killed["examined"] == 5 * killed["batches"] <= len(ordered) // 2
    # Whole batches only: exactly the region results up to the saved cursor are mirrored.
    assert {r["id"] for r in ordered if r["id"] <= killed["cursor"]} == (
        {r["id"] for r in ordered} - not_mirrored(db)
    )
    assert mirrored_count(db) == killed["inserted"]
    wait_lock_released(db)

    summary = run_backfill(dsn, batch_size=50)
    assert summary.resumed and summary.complete and summary.run_id == killed["id"]
    assert summary.examined == total
    assert summary.inserted == mirrored_count(db) == bulk_stored_rows(30)
    assert_matches_oracle(db)
    assert_one_mirrored_row_per_key(db)


def test_progress_bar_on_a_terminal_and_summary_on_stdout(db: Any, dsn: str) -> None:
    """On a terminal, stderr shows a progress bar (done / total); the summary goes to stdout."""
    import pty

    write_bulk_legacy(db, "tty", 10)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "beaconsql.cli", "backfill", "--dsn", dsn, "--batch-size", "5"],
            cwd=REPO,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
        )
        out, _ = proc.communicate(timeout=60)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    err = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, (out, err)
    assert "backfill" in err and "20/20" in err
    assert out.startswith("20 region results examined in 4 batches")
    assert f"{bulk_stored_rows(10)} inserted" in out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_stops_after_the_batch_records_interrupted_and_a_rerun_completes(
    db: Any, dsn: str, signum: int
) -> None:
    """SIGTERM (and Ctrl-C): the run stops after the current batch, exits 1, is recorded
    'interrupted' with its cursor; the state is consistent (every region result up to the
    cursor mirrored, none after it); `beaconsql status` shows the run; a rerun resumes and
    completes. Without a terminal, progress goes to stderr as log lines."""
    write_bulk_legacy(db, "term", 40)
    total = region_result_count(db)
    proc = cli_process(["backfill", "--dsn", dsn, "--batch-size", "5", "--sleep", "0.2"])
    try:
        wait_for_batches(db, proc, 2)
    finally:
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err
    assert "stopped early" in out
    assert re.search(r"batch \d+: 5 region results", err), err
    run = last_run(db)
    assert run["status"] == "interrupted" and run["cursor"] is not None
    assert run["examined"] == 5 * run["batches"] < total
    # Consistent: every region result up to the cursor is mirrored, none after it.
    pending = not_mirrored(db)
    assert len(pending) == total - run["examined"]
    assert all(rid > run["cursor"] for rid in pending)
    assert backfill.last_runs(db)["unfinished"]["status"] == "interrupted"
    status = cli(["status", "--dsn", dsn, "--json"])
    assert status.exit_code == 0, status.output
    state = json.loads(status.stdout)
    assert state["backfill"]["unfinished"]["status"] == "interrupted"
    assert state["backfill"]["unfinished"]["cursor"] == str(run["cursor"])
    assert state["mirror"]["not_mirrored"] == len(pending)

    summary = run_backfill(dsn, batch_size=100)
    assert summary.resumed and summary.complete and summary.run_id == run["id"]
    assert summary.examined == total
    assert_matches_oracle(db)


def test_double_ctrl_c_mid_batch_leaves_an_interrupted_run_that_status_reports(
    db: Any, dsn: str, connect: Any
) -> None:
    """A second Ctrl-C aborts the batch in flight (here waiting for a (job_id, region) lock a
    writer holds): exit 1, no traceback; the batch is rolled back whole; the run is recorded
    'interrupted' and `status` says so (once it said 'running' for the dead run); a rerun
    resumes it and completes."""
    write_bulk_legacy(db, "ctrlc", 20)
    total = region_result_count(db)
    ordered, holder, proc = backfill_waiting_mid_batch(db, dsn, connect)
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        holder.rollback()
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err
    run = last_run(db)
    assert run["status"] == "interrupted"
    assert run["examined"] == 5 * run["batches"] <= len(ordered) // 2
    assert mirrored_count(db) == run["inserted"]
    status = cli(["status", "--dsn", dsn, "--json"])
    assert json.loads(status.stdout)["backfill"]["unfinished"]["status"] == "interrupted"
    assert f"backfill: run #{run['id']} interrupted" in cli(["status", "--dsn", dsn]).stdout

    summary = run_backfill(dsn, batch_size=50)
    assert summary.resumed and summary.complete and summary.run_id == run["id"]
    assert summary.examined == total
    assert_matches_oracle(db)


def test_stop_during_the_deleted_region_results_pass_resumes_there(
    db: Any, dsn: str, connect: Any
) -> None:
    """should_stop (the library's cancellation) polled between batches of the second pass,
    over region results deleted while triggers were skipped: the run is 'interrupted' in that
    phase; the rerun resumes it, removes the rest of their rows and completes."""
    runs = [
        seed.record_with_writer(db, small_spec(["m1"], ["q1"], regions=("US",))) for _ in range(12)
    ]
    assert mirrored_count(db) == 12
    with triggers_skipped(db, ("region_results",)):
        db.execute(
            "DELETE FROM region_results WHERE id = ANY(%s)",
            ([r.region_result_ids["US"] for r in runs[:10]],),
        )
    watcher = connect()

    def stop_in_orphans() -> bool:
        row = watcher.execute(
            "SELECT phase, examined FROM region_results_backfill_runs WHERE status = 'running'"
        ).fetchone()
        return row is not None and row[0] == "orphans" and row[1] >= 2 + 4

    first = run_backfill(dsn, batch_size=2, should_stop=stop_in_orphans)
    assert not first.complete
    run = last_run(db)
    assert (run["status"], run["phase"]) == ("interrupted", "orphans")
    assert mirrored_count(db) == 12 - 4
    second = run_backfill(dsn, batch_size=2)
    assert second.complete and second.resumed and second.run_id == run["id"]
    assert second.deleted == 10 and second.examined == 2 + 10
    assert mirrored_count(db) == 2
    assert verify.verify(db).exit_code == 0
    assert_matches_oracle(db)


def hold_lease(conn: psycopg.Connection[Any], *, seconds: float = 3600) -> int:
    """Record a run holding the backfill lease for *seconds*, as another host's process
    would (no server session to watch): return its id."""
    row = conn.execute(
        "INSERT INTO region_results_backfill_runs (lease_token, lease_host, lease_pid, "
        "lease_application, lease_taken_at, heartbeat_at, lease_expires_at) "
        "VALUES (gen_random_uuid(), 'ops-host', 4242, 'psql', "
        "timestamptz '2026-01-02 03:04:05+00', clock_timestamp(), "
        "clock_timestamp() + make_interval(secs => %s)) RETURNING id",
        (seconds,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_second_concurrent_backfill_is_refused(db: Any, dsn: str) -> None:
    """The single-runner lease: while another run holds it, the library raises
    BackfillBusyError naming the holder (host, pid, application, since when, last heartbeat)
    and the CLI exits 1 saying so, as does a dry run; nothing is written. Two processes: the
    second is refused, naming the first, while the first runs; the first then stops when
    asked and a rerun completes.

    Once (one full run in three) the second process was not refused: the first run, 40
    region results in batches of 5 with 0.2 s pauses, could finish within the second
    process's start-up on a loaded machine. A race in the test, not the code: the first now
    pauses for minutes after its first batch, so it provably holds the lease while the
    second starts, and stops at once when asked (pauses wake on Ctrl-C or SIGTERM)."""
    write_bulk_legacy(db, "busy", 20)
    held = hold_lease(db)
    before = snapshot(db)
    with pytest.raises(BackfillBusyError) as refused:
        run_backfill(dsn)
    message = str(refused.value)
    assert f"another backfill is running on this database: run #{held} (host ops-host, " in (
        message
    )
    assert "pid 4242, application psql), running since 2026-01-02 03:04:05 UTC" in message
    assert "last heartbeat " in message and "lease until " in message
    with pytest.raises(BackfillBusyError, match=f"run #{held}"):
        run_backfill(dsn, dry_run=True)
    result = cli(["backfill", "--dsn", dsn])
    assert result.exit_code == 1
    assert f"FAILED: another backfill is running on this database: run #{held}" in result.stderr
    assert "Traceback" not in result.output
    assert snapshot(db) == before
    assert db.execute("SELECT count(*) FROM region_results_backfill_runs").fetchone() == (1,)
    db.execute("DELETE FROM region_results_backfill_runs")

    first = cli_process(["backfill", "--dsn", dsn, "--batch-size", "5", "--sleep", "600"])
    try:
        wait_for_batches(db, first, 1)
        second = cli_run(["backfill", "--dsn", dsn])
        assert first.poll() is None, first.communicate()
    finally:
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=60)
    assert second.returncode == 1, (second.stdout, second.stderr)
    assert "another backfill is running on this database: run #" in second.stderr
    assert f"pid {first.pid}, application beaconsql)" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.returncode == 1 and "stopped early: 5 region results examined" in out, err
    run = last_run(db)
    assert (run["status"], run["examined"]) == ("interrupted", 5)
    assert db.execute("SELECT count(*) FROM region_results_backfill_runs").fetchone() == (1,)
    summary = run_backfill(dsn)
    assert summary.resumed and summary.complete and summary.run_id == run["id"]
    assert summary.examined == region_result_count(db)


def test_a_run_that_lost_its_lease_stops_with_its_batch_rolled_back(db: Any, dsn: str) -> None:
    """Fencing: once another run has taken the lease over (as a run resuming this one after
    its lease expired does), this run's next write finds it gone: BackfillBusyError naming the
    new holder; nothing more is mirrored and the other run's record stays as it took it."""
    write_bulk_legacy(db, "fence", 10)
    taken = False

    def take_over() -> bool:
        nonlocal taken
        if not taken and last_run(db)["batches"] >= 2:
            taken = True
            db.execute(
                "UPDATE region_results_backfill_runs SET lease_token = gen_random_uuid(), "
                "lease_host = 'other-host', lease_pid = 99, lease_backend_pid = NULL "
                "WHERE status = 'running'"
            )
        return False

    with pytest.raises(BackfillBusyError, match="lost its lease to run #.*host other-host"):
        run_backfill(dsn, batch_size=5, should_stop=take_over)
    run = last_run(db)
    assert (run["status"], run["lease_host"], run["batches"]) == ("running", "other-host", 2)
    assert mirrored_count(db) == 10 * 9
    assert len(not_mirrored(db)) == region_result_count(db) - 10


# ============================================================================================
# Options: dry run, scope, usage
# ============================================================================================


def test_dry_run_reports_the_real_summary_and_writes_nothing(db: Any, dsn: str) -> None:
    write_history(db)
    before = snapshot(db)
    result = cli(["backfill", "--dsn", dsn, "--dry-run", "--json", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    dry = json.loads(result.stdout)
    assert dry["dry_run"] is True and dry["complete"] is True
    assert {
        "examined",
        "inserted",
        "updated",
        "deleted",
        "detached",
        "left_to_direct",
        "anomalies",
        "changed",
        "resumed",
        "batches",
    } <= set(dry)
    assert snapshot(db) == before
    assert db.execute("SELECT count(*) FROM region_results_backfill_runs").fetchone() == (0,)
    assert mirrored_count(db) == 0

    result = cli(["backfill", "--dsn", dsn, "--json", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    real = json.loads(result.stdout)
    ignore = {"run_id", "dry_run", "elapsed_seconds"}
    assert {k: v for k, v in dry.items() if k not in ignore} == {
        k: v for k, v in real.items() if k not in ignore
    }
    assert real["inserted"] == mirrored_count(db) > 0
    assert_matches_oracle(db)


def test_job_option_restricts_the_scope(db: Any, dsn: str) -> None:
    history = write_history(db)
    job = history.jobs["mixed"]
    ids = [
        r[0]
        for r in db.execute(
            "SELECT r.id FROM region_results r JOIN cross_region_executions x "
            "ON x.id = r.cross_region_execution_id WHERE x.jobspec_id = %s",
            (job,),
        )
    ]
    others = not_mirrored(db) - set(ids)
    result = cli(["backfill", "--dsn", dsn, "--job", job, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["examined"] == len(ids) == 3
    assert not_mirrored(db) == others
    assert {
        r[0]
        for r in db.execute(
            "SELECT DISTINCT mirror_region_result_id FROM executions "
            "WHERE mirror_region_result_id IS NOT NULL"
        )
    } == set(ids)
    assert_matches_oracle(db, ids)


def test_since_option_restricts_the_scope_in_utc(db: Any, dsn: str) -> None:
    """--since filters on region_results.updated_at; a timestamp without a zone is UTC (the
    session TimeZone of the process is New York)."""
    spec = small_spec(["m1"], ["q1"], regions=("US",))
    with triggers_skipped(db):
        make_job(db, jobspec_id=spec["id"], jobspec_data=spec)
        x = make_run(db, jobspec_id=spec["id"])
        old = make_region_result(
            db,
            cross_region_execution_id=x["id"],
            updated_at=datetime(2025, 10, 14, 23, 0, tzinfo=UTC),
        )["id"]
        new = make_region_result(
            db,
            cross_region_execution_id=x["id"],
            updated_at=datetime(2025, 10, 15, 2, 0, tzinfo=UTC),
        )["id"]
    result = cli_run(["backfill", "--dsn", dsn, "--since", "2025-10-15T01:00:00", "--json"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["examined"] == 1
    assert not_mirrored(db) == {old}
    assert_matches_oracle(db, [new])
    result = cli_run(["backfill", "--dsn", dsn, "--since", "2025-10-14T22:00:00Z", "--json"])
    assert result.returncode == 0, result.stderr
    assert not_mirrored(db) == set()


@pytest.mark.parametrize(
    "args",
    [
        ["--batch-size", "0"],
        ["--batch-size", "-5"],
        ["--since", "yesterday"],
        ["--batch-size", "ten"],
        ["--sleep", "-1"],
    ],
    ids=["batch-0", "batch-negative", "since-yesterday", "batch-not-a-number", "sleep-negative"],
)
def test_bad_options_exit_2_before_touching_the_database(args: list[str]) -> None:
    """Usage errors exit 2 before any connection: the DSN points at a closed port, which would
    exit 1 if it were tried."""
    result = cli(["backfill", "--dsn", UNREACHABLE_DSN, *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "cannot connect" not in result.output


@pytest.mark.parametrize(
    "args",
    [["--job"], ["--bogus"], ["extra-argument"]],
    ids=["job-without-value", "unknown-option", "extra-argument"],
)
def test_verify_usage_errors_exit_2_before_touching_the_database(args: list[str]) -> None:
    result = cli(["verify", "--dsn", UNREACHABLE_DSN, *args])
    assert result.exit_code == 2, result.output
    assert "cannot connect" not in result.output


def test_library_rejects_bad_arguments_before_touching_the_database(db: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        backfill.backfill(db, batch_size=0)
    with pytest.raises(InvalidArgumentError):
        backfill.backfill(db, batch_size=-5)
    assert db.execute("SELECT count(*) FROM region_results_backfill_runs").fetchone() == (0,)


@pytest.mark.parametrize("command", ["backfill", "verify"])
def test_unreachable_server_exits_1_without_traceback(command: str) -> None:
    result = cli_run([command, "--dsn", UNREACHABLE_DSN], timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("FAILED: ") and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["backfill", "verify"])
def test_unmigrated_database_exits_1_saying_to_upgrade(
    empty_db: Any, runner_db: Any, command: str
) -> None:
    """On an empty database and on a runner database beaconsql never migrated: exit 1, the
    message names `beaconsql upgrade`, no traceback, nothing written."""
    for conn in (empty_db, runner_db):
        result = cli_run([command, "--dsn", dsn_of(conn)], timeout=60)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "beaconsql upgrade" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert result.stderr.startswith("FAILED: ")
    conn = runner_db
    conn.rollback()
    assert conn.execute("SELECT to_regclass('public.region_results_backfill_runs')").fetchone() == (
        None,
    )


def test_backfill_of_an_empty_database_and_of_deleted_history(db: Any, dsn: str) -> None:
    """Nothing to do: complete, nothing examined. Then every region result deleted while the
    triggers were skipped: the backfill removes their mirrored rows and states."""
    summary = run_backfill(dsn)
    assert summary.complete and summary.examined == 0 and summary.changed == 0
    spec = small_spec(["m1", "m2"], ["q1"])
    seed.record_with_writer(db, spec)
    assert mirrored_count(db) == 4
    with triggers_skipped(db, ("region_results",)):
        db.execute("DELETE FROM region_results")
    summary = run_backfill(dsn)
    assert summary.complete and summary.deleted == 4 and summary.examined == 2
    assert mirrored_count(db) == 0
    assert db.execute("SELECT count(*) FROM region_results_mirror_state").fetchone() == (0,)
    assert verify.verify(db).exit_code == 0


def test_lock_timeouts_are_retried(db: Any, dsn: str, connect: Any, caplog: Any) -> None:
    """A batch that cannot get a (job_id, region) lock in time (a writer holds it) is retried
    with backoff, and the run completes once the lock is free."""
    spec = small_spec(["m1", "m2"], ["q1"], regions=("US",))
    with triggers_skipped(db):
        job = make_job(db, jobspec_id=spec["id"], jobspec_data=spec)
        x = make_run(db, jobspec_id=spec["id"])
        rid = make_region_result(
            db, cross_region_execution_id=x["id"], status="failed", completed_at=T0
        )["id"]
    holder = connect(autocommit=False)
    hold_mirror_lock(holder, job["id"], "US", rid)
    result: dict[str, Any] = {}
    caplog.set_level("INFO", logger="beaconsql.backfill")

    def go() -> None:
        try:
            result["summary"] = run_backfill(dsn)
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    deadline = time.monotonic() + 30
    while not any("batch retried" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline and thread.is_alive(), result
        time.sleep(0.02)
    holder.rollback()
    thread.join(timeout=60)
    assert "error" not in result, result
    assert result["summary"].complete and result["summary"].inserted == 2
    assert_matches_oracle(db)


def test_backfill_never_changes_the_view_for_tied_candidates(db: Any, dsn: str) -> None:
    """Repro: job with spec models [m1], questions [q1], region US; with triggers disabled,
    two runs of it, each with a region result status 'failed', the same started_at and
    completed_at, error_message 'A' for region result 00000000-…-0002 (inserted first) and
    'B' for 00000000-…-0001. executions_unified shows 'A' (tie-break region_result_id DESC);
    after `beaconsql backfill` (one batch) it shows 'B': the row of …-0002 got the lower
    execution_id, and the tie-break execution_id DESC now decides."""
    spec = small_spec(["m1"], ["q1"], regions=("US",))
    with triggers_skipped(db):
        make_job(db, jobspec_id=spec["id"], jobspec_data=spec)
        for n, message in ((2, "A"), (1, "B")):
            x = make_run(db, jobspec_id=spec["id"])
            make_region_result(
                db,
                id=uuid.UUID(int=n),
                cross_region_execution_id=x["id"],
                status="failed",
                started_at=T0,
                completed_at=T0 + timedelta(minutes=1),
                error_message=message,
            )
    query = "SELECT region_result_id, original_error FROM executions_unified WHERE jobspec_id = %s"
    before = fetch(db, query, (spec["id"],))
    assert before == [{"region_result_id": uuid.UUID(int=2), "original_error": "A"}]
    run_backfill(dsn)
    assert fetch(db, query, (spec["id"],)) == before


def test_backfill_never_changes_the_view_for_a_logged_row_of_a_deleted_region_result(
    db: Any, dsn: str
) -> None:
    """Repro: record a job (models [m1, m2], questions [q1], US) through the writer; INSERT a
    transparency_log entry for its (m1, q1) executions row; ALTER TABLE region_results
    DISABLE TRIGGER USER; DELETE the region result; ENABLE. executions_unified shows no row
    for the job; after `beaconsql backfill` it shows the (m1, q1) row as direct (detached,
    as the trigger would have left it had it fired)."""
    spec = small_spec(["m1", "m2"], ["q1"], regions=("US",))
    run = seed.record_with_writer(db, spec)
    rid = run.region_result_ids["US"]
    logged = db.execute(
        "SELECT id FROM executions WHERE mirror_region_result_id = %s AND model_id = 'm1'", (rid,)
    ).fetchone()
    assert logged is not None
    db.execute(
        "INSERT INTO transparency_log (execution_id, job_id, region, provider_id, status) "
        "VALUES (%s, %s, 'US', 'modal-us-east', 'completed')",
        (logged[0], spec["id"]),
    )
    with triggers_skipped(db, ("region_results",)):
        db.execute("DELETE FROM region_results WHERE id = %s", (rid,))
    query = (
        "SELECT execution_id, source, model_id, question_id, status "
        "FROM executions_unified WHERE jobspec_id = %s ORDER BY model_id"
    )
    before = fetch(db, query, (spec["id"],))
    summary = run_backfill(dsn)
    assert summary.detached == 1 and summary.deleted == 1
    assert fetch(db, query, (spec["id"],)) == before


# ============================================================================================
# Scale
# ============================================================================================


@pytest.mark.slow
def test_scale_20k_legacy_region_results_in_bounded_batches(db: Any, dsn: str) -> None:
    """20k legacy region results (3 models x 3 questions each) backfill into 180k rows, each
    batch transaction changing at most batch_size x 9 rows (the summary says so, and so do the
    rows' xmins); counts per status and evidence match the rule, a sample matches exactly."""
    n_jobs = 10_000
    total = write_bulk_legacy(db, "scale", n_jobs)
    assert total == region_result_count(db) == 20_000
    batch_size = 1000

    # Keep executions' statistics current while it grows from 0 to 180k rows, as autovacuum
    # does on a live server: with none, the planner probes direct-row ownership through
    # idx_executions_model_region and one batch can take 10-30 s (see the report).
    analyzer = psycopg.connect(dsn, autocommit=True)

    def analyze(done: int, _total: int) -> None:
        if done and done % (4 * batch_size) == 0:
            analyzer.execute("ANALYZE executions")

    try:
        summary = run_backfill(dsn, batch_size=batch_size, progress=analyze)
    finally:
        analyzer.close()

    assert summary.complete and summary.examined == total
    assert summary.inserted == bulk_stored_rows(n_jobs) == mirrored_count(db)
    assert summary.max_batch_rows <= batch_size * 9
    assert summary.batches >= total // batch_size
    biggest = db.execute(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM executions GROUP BY xmin::text) t"
    ).fetchone()
    assert biggest is not None and biggest[0] <= batch_size * 9
    counts = Counter(
        {
            (s, e): n
            for s, e, n in db.execute(
                "SELECT status, mirror_evidence, count(*) FROM executions GROUP BY 1, 2"
            )
        }
    )
    assert counts == bulk_expected_counts(n_jobs)
    sample = [
        r[0] for r in db.execute("SELECT id FROM region_results ORDER BY md5(id::text) LIMIT 300")
    ]
    assert (
        assert_matches_oracle(db, sample)
        == db.execute(
            "SELECT count(*) FROM executions WHERE mirror_region_result_id = ANY(%s)", (sample,)
        ).fetchone()[0]
    )
    report = verify.verify(db)
    assert report.exit_code == 0 and report.examined == total


def test_backfill_from_empty_keeps_the_statistics_to_the_order_of_magnitude(
    db: Any, dsn: str
) -> None:
    """A backfill that fills executions from empty ANALYZEs it as it grows (the mirror's cached
    plans are built from its statistics), a few times, not once a batch: afterwards the
    planner's row count is within ANALYZE_GROWTH of the truth."""
    write_bulk_legacy(db, "stats", 1_000)
    db.execute("ANALYZE executions")

    def manual_analyzes() -> int:
        row = db.execute(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = 'executions'::regclass"
        ).fetchone()
        assert row is not None
        return int(row[0])

    before = manual_analyzes()
    summary = run_backfill(dsn, batch_size=100)
    assert summary.complete and summary.batches >= 20
    db.execute("SELECT pg_stat_clear_snapshot()")
    analyzes = manual_analyzes() - before
    assert 1 <= analyzes <= 3, analyzes
    estimate = db.execute(
        "SELECT reltuples FROM pg_class WHERE oid = 'executions'::regclass"
    ).fetchone()
    assert estimate is not None
    assert estimate[0] * backfill.ANALYZE_GROWTH >= summary.inserted, (estimate, summary.inserted)
