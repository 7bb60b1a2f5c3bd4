"""Through a real PgBouncer in transaction mode, as managed PostgreSQL services front the
database (Debian's pgbouncer, 1.18: no max_prepared_statements): backfill (alone with other
traffic, two at once, killed), verify, status and the portal commands, the writer on a
default psycopg connection all work; upgrade stops, asking for a direct DSN, and leaves no
setting behind on the pool's server sessions.

The pool has POOL_SIZE server sessions handed out round robin, so that consecutive
transactions of one client land on different sessions: whatever relies on session state
(a prepared statement, a SET, a session advisory lock) fails here, as
test_the_pool_hands_each_transaction_to_any_server_session shows first.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import dsn_for, dsn_of
from helpers import cli_process, cli_run, last_run, triggers_skipped, wait_for_batches

from beaconsql import backfill, migration, portal, seed, verify
from beaconsql import status as status_module
from beaconsql.db import behind_pooler
from beaconsql.errors import BackfillBusyError, MigrationError

POOL_SIZE = 2
PREPARED_STATEMENT_ERRORS = (
    psycopg.errors.InvalidSqlStatementName,  # 26000: prepared statement "_pg3_0" does not exist
    psycopg.errors.DuplicatePreparedStatement,  # 42P05: ... already exists
)


# ============================================================================================
# The pooler
# ============================================================================================


def _pgbouncer_binary() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    debian = Path("/usr/sbin/pgbouncer")
    return str(debian) if debian.exists() else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_as(server_host: str) -> str | None:
    """As root, the user pgbouncer switches to (it refuses to run as root): the owner of the
    server's socket directory for a Unix-socket server (so that it can reach it), else
    postgres (else nobody). None when not root."""
    if os.geteuid() != 0:
        return None
    if server_host.startswith("/"):
        owner = pwd.getpwuid(Path(server_host).stat().st_uid).pw_name
        if owner != "root":
            return owner
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    return None


@dataclass
class Pooler:
    """A private PgBouncer in transaction mode in front of the test server."""

    port: int
    user: str
    password: str
    log: Path

    def dsn(self, dbname: str) -> str:
        """A DSN of *dbname* through the pooler."""
        return dsn_for("127.0.0.1", self.port, self.user, dbname, self.password)

    def server_settings(self, dbname: str, setting: str) -> dict[int, str]:
        """Return {server session pid: its value of *setting*} for every server session of
        the pool of *dbname*: POOL_SIZE transactions held open at once through the pooler,
        so each runs on a session of its own."""
        seen: dict[int, str] = {}
        with ExitStack() as stack:
            for _ in range(POOL_SIZE):
                conn = stack.enter_context(
                    psycopg.connect(self.dsn(dbname), prepare_threshold=None)
                )
                row = conn.execute(
                    "SELECT pg_backend_pid(), current_setting(%s)", (setting,)
                ).fetchone()
                assert row is not None
                seen[int(row[0])] = str(row[1])
        assert len(seen) == POOL_SIZE, f"{POOL_SIZE} open transactions ran on sessions {seen}"
        return seen

    def warm(self, dbname: str) -> None:
        """Open the pool's POOL_SIZE server sessions, so that round robin alternates them."""
        self.server_settings(dbname, "application_name")


@pytest.fixture
def pooler(
    db: psycopg.Connection[Any], pg_backend: dict[str, Any], tmp_path: Path
) -> Iterator[Pooler]:
    """A PgBouncer of this test's own (its ini in tmp_path, a free port, transaction pooling,
    POOL_SIZE server sessions per database handed out round robin) in front of the test
    server, every database of it reachable by its name; warmed for :func:`db`'s database.
    Stopped before the test's databases are dropped. Skips only when pgbouncer is missing."""
    binary = _pgbouncer_binary()
    if binary is None:
        pytest.skip(
            "pgbouncer is not installed: these tests need a real PgBouncer "
            "(Debian: apt-get install pgbouncer; .ci/run installs it)"
        )
    host, port = str(pg_backend["host"]), int(pg_backend["port"])
    user, password = str(pg_backend["user"]), str(pg_backend["password"] or "")
    listen = _free_port()
    auth = tmp_path / "pgbouncer_users.txt"
    auth.write_text(f'"{user}" "{password}"\n')
    run_as = _run_as(host)
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={host} port={port}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {listen}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {auth}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {POOL_SIZE}\n"
        "server_round_robin = 1\n"
        "max_client_conn = 200\n"
        "logfile =\n"
        "pidfile =\n" + (f"user = {run_as}\n" if run_as else "")
    )
    log = tmp_path / "pgbouncer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, str(ini)], stdout=out, stderr=subprocess.STDOUT)
    pool = Pooler(port=listen, user=user, password=password, log=log)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"pgbouncer exited: {log.read_text()[-2000:]}"
            try:
                psycopg.connect(pool.dsn(db.info.dbname), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        pool.warm(db.info.dbname)
        yield pool
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ============================================================================================
# Helpers
# ============================================================================================


LEGACY_HISTORY = """
WITH job AS (
    INSERT INTO jobs (jobspec_id, jobspec_data, status, created_at, updated_at)
    SELECT %(prefix)s || g,
           jsonb_build_object(
               'id', %(prefix)s || g,
               'constraints', jsonb_build_object('regions', jsonb_build_array('US', 'EU')),
               'metadata', jsonb_build_object('models',
                   jsonb_build_array('llama3.2-1b', 'mistral-7b', 'qwen2.5-1.5b')),
               'questions', jsonb_build_array('greatest_invention', 'tiananmen_neutral',
                                              'taiwan_status')),
           'completed', timestamp '2025-10-01' + g * interval '1 minute',
           timestamp '2025-10-01' + g * interval '1 minute'
    FROM generate_series(1, %(jobs)s) g
    RETURNING jobspec_id, created_at),
run AS (
    INSERT INTO cross_region_executions (jobspec_id, total_regions, min_regions_required,
                                         status, started_at, completed_at, success_count)
    SELECT jobspec_id, 2, 1, 'completed', created_at AT TIME ZONE 'UTC',
           created_at AT TIME ZONE 'UTC' + interval '2 minutes', 2
    FROM job
    RETURNING id, jobspec_id, started_at)
INSERT INTO region_results (cross_region_execution_id, region, provider_id, status, started_at,
                            completed_at, duration_ms, execution_output, error_message, metadata)
SELECT run.id, r.region, 'modal-' || lower(r.region), 'success', run.started_at,
       run.started_at + interval '45 seconds', 45000,
       jsonb_build_object('data', jsonb_build_object(
           'response', 'answer of ' || run.jobspec_id || ' in ' || r.region,
           'metadata', jsonb_build_object('model', 'llama3.2-1b', 'region', r.region)),
           'hash', ''),
       '', jsonb_build_object('success_count', 1, 'failure_count', 0, 'total_executions', 1)
FROM run CROSS JOIN (VALUES ('US'), ('EU')) r(region)
"""


def write_legacy_history(conn: psycopg.Connection[Any], prefix: str, jobs: int) -> int:
    """Record *jobs* jobs the runner's legacy way (one answer per region, 2 regions, 3 models x
    3 questions), with the triggers skipped; return the region results written (2 per job)."""
    with triggers_skipped(conn):
        written = conn.execute(LEGACY_HISTORY, {"prefix": prefix, "jobs": jobs}).rowcount
    conn.execute("ANALYZE")
    return written


def view_of_jobs(conn: psycopg.Connection[Any], prefix: str) -> list[tuple[Any, ...]]:
    """What the portal's view shows for the jobs of *prefix* (the backfill never changes it)."""
    return conn.execute(
        "SELECT jobspec_id, region, model_id, question_id, status, evidence, output_data::text,"
        " original_error FROM executions_unified WHERE jobspec_id LIKE %s || '%%' ORDER BY 1, 2,"
        " 3, 4",
        (prefix,),
    ).fetchall()


def mirrored_rows_of_jobs(conn: psycopg.Connection[Any], prefix: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM executions e JOIN jobs j ON j.id = e.job_id "
        "WHERE e.mirror_region_result_id IS NOT NULL AND j.jobspec_id LIKE %s || '%%'",
        (prefix,),
    ).fetchone()
    assert row is not None
    return int(row[0])


class Traffic:
    """Other clients of the pool: each records writer runs of 18 pairs on a default psycopg
    connection (autocommit: each call its own transaction, as the runner writes) and reads
    them back through the portal, until stopped."""

    def __init__(self, dsn: str, workers: int = 2) -> None:
        self.dsn = dsn
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.jobs: list[str] = []
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]

    def _work(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    jobspec_id = f"traffic-{uuid.uuid4().hex[:12]}"
                    seed.record_with_writer(conn, seed.jobspec(jobspec_id))
                    shown = portal.executions_all(conn, jobspec_id)["executions"]
                    assert len(shown) == 18, (jobspec_id, len(shown))
                    self.jobs.append(jobspec_id)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


# ============================================================================================
# The pool itself
# ============================================================================================


def test_the_pool_hands_each_transaction_to_any_server_session(
    db: psycopg.Connection[Any], pooler: Pooler
) -> None:
    """What the other tests stand on: through the pool, consecutive transactions of one
    client run on different server sessions; a session SET stays on a server session for
    other clients; a default psycopg connection fails once it prepares a statement
    (psycopg prepares on the fifth execution). beaconsql tells the pool from a direct
    connection."""
    dsn = pooler.dsn(db.info.dbname)
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = set()
        for _ in range(4):
            row = conn.execute("SELECT pg_backend_pid()", prepare=False).fetchone()
            assert row is not None
            pids.add(row[0])
        assert len(pids) == POOL_SIZE
        assert behind_pooler(conn) is True
        assert conn.info.backend_pid not in pids
        conn.execute("SET lock_timeout = '7s'", prepare=False)
    assert behind_pooler(db) is False
    assert sorted(pooler.server_settings(db.info.dbname, "lock_timeout").values()) == ["0", "7s"]

    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(PREPARED_STATEMENT_ERRORS):
            for n in range(10):
                conn.execute("SELECT %s::int", (n,))


# ============================================================================================
# backfill
# ============================================================================================


def test_backfill_through_the_pooler_with_other_traffic_is_exact(
    db: psycopg.Connection[Any], pooler: Pooler
) -> None:
    """`beaconsql backfill` through the pool, in many batches, while two other clients record
    runs through the writer and read them back on the same pool: it completes; every legacy
    region result is mirrored (9 rows each), the view of those jobs is what it was before,
    verify finds no drift; the other clients saw no error. The run's lease names the process
    and no server session (through a pool there is none to watch)."""
    legacy = write_legacy_history(db, "legacy-", 150)
    before = view_of_jobs(db, "legacy-")
    assert len(before) == 150 * 18
    pooled = pooler.dsn(db.info.dbname)
    with Traffic(pooled) as traffic:
        deadline = time.monotonic() + 60
        while not traffic.jobs and not traffic.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        proc = cli_process(
            ["backfill", "--dsn", pooled, "--batch-size", "10", "--json"], time_zone=None
        )
        out, err = proc.communicate(timeout=300)
    assert traffic.errors == [], traffic.errors
    assert proc.returncode == 0, (out, err)
    summary = json.loads(out)
    assert summary["complete"] is True and summary["batches"] >= legacy // 10
    assert summary["inserted"] >= legacy * 9
    assert mirrored_rows_of_jobs(db, "legacy-") == legacy * 9
    assert view_of_jobs(db, "legacy-") == before
    state = status_module.status(db)
    assert state.mirror is not None and state.mirror["not_mirrored"] == 0
    assert verify.verify(db).exit_code == 0
    assert len(traffic.jobs) >= 1
    for jobspec_id in traffic.jobs:
        assert len(portal.executions_all(db, jobspec_id)["executions"]) == 18
    run = last_run(db)
    assert (run["status"], run["lease_pid"], run["lease_application"]) == (
        "completed",
        proc.pid,
        "beaconsql",
    )
    assert run["lease_backend_pid"] is None


def test_two_concurrent_backfills_through_the_pooler_one_runs_the_other_is_refused(
    db: psycopg.Connection[Any], pooler: Pooler
) -> None:
    """Two `beaconsql backfill` started at once through the pool: exactly one takes the lease
    and runs; the other exits 1 naming it (host, pid, application beaconsql, since when, last
    heartbeat). The runner, stopped with SIGTERM, resumes in a later run that completes."""
    legacy = write_legacy_history(db, "twice-", 20)
    pooled = pooler.dsn(db.info.dbname)
    args = ["backfill", "--dsn", pooled, "--batch-size", "5", "--sleep", "600"]
    procs = [cli_process(args, time_zone=None), cli_process(args, time_zone=None)]
    try:
        deadline = time.monotonic() + 120
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = next(p for p in procs if p.poll() is not None)
        runner = next(p for p in procs if p is not refused)
        out, err = refused.communicate()
        wait_for_batches(db, [runner], 1, limit=120)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    runner_out, runner_err = runner.communicate(timeout=60)
    assert refused.returncode == 1, (out, err)
    assert "FAILED: another backfill is running on this database: run #" in err
    assert f"host {socket.gethostname()}, pid {runner.pid}, application beaconsql)" in err
    assert "running since " in err and "last heartbeat " in err and "Traceback" not in err
    assert runner.returncode == 1 and "stopped early" in runner_out, runner_err
    runs = db.execute("SELECT id, status, lease_pid FROM region_results_backfill_runs").fetchall()
    assert len(runs) == 1 and runs[0][1:] == ("interrupted", runner.pid)

    done = cli_run(["backfill", "--dsn", pooled, "--json"], timeout=300, time_zone=None)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed"] is True and summary["run_id"] == runs[0][0]
    assert summary["complete"] is True and summary["examined"] == legacy
    assert mirrored_rows_of_jobs(db, "twice-") == legacy * 9


def test_kill_9_through_the_pooler_then_the_next_run_resumes_once_the_lease_expires(
    db: psycopg.Connection[Any], pooler: Pooler
) -> None:
    """SIGKILL a backfill running through the pool with a short lease: the server cannot see
    it end (the pool keeps the session), so until its lease expires the next run is refused
    naming it and `status` says running; then `status` says interrupted, and the next run
    resumes it from its cursor and completes exactly."""
    legacy = write_legacy_history(db, "killed-", 40)
    before = view_of_jobs(db, "killed-")
    pooled = pooler.dsn(db.info.dbname)
    lease = 8.0
    proc = cli_process(
        ["backfill", "--dsn", pooled, "--batch-size", "5", "--sleep", "0.2", "--lease", str(lease)],
        time_zone=None,
    )
    try:
        wait_for_batches(db, [proc], 2, limit=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    killed = last_run(db)
    assert killed["status"] == "running" and killed["lease_backend_pid"] is None
    assert 2 <= killed["batches"] < legacy / 5
    with psycopg.connect(pooled, autocommit=True) as conn:
        with pytest.raises(BackfillBusyError, match=f"pid {proc.pid}, application beaconsql"):
            backfill.backfill(conn)
        state = status_module.status(conn)
        assert state.backfill is not None
        assert state.backfill["unfinished"]["status"] == "running"
        deadline = time.monotonic() + lease + 30
        while not (holder := backfill.lease_holder(conn)) or not holder.lapsed:
            assert holder is not None and time.monotonic() < deadline
            time.sleep(0.1)
    shown = cli_run(["status", "--dsn", pooled, "--json"], timeout=300, time_zone=None)
    assert shown.returncode == 0, shown.stderr
    unfinished = json.loads(shown.stdout)["backfill"]["unfinished"]
    assert (unfinished["id"], unfinished["status"]) == (killed["id"], "interrupted")
    human = cli_run(["status", "--dsn", pooled], timeout=300, time_zone=None)
    assert f"backfill: run #{killed['id']} interrupted" in human.stdout, human.stdout

    done = cli_run(
        ["backfill", "--dsn", pooled, "--batch-size", "50", "--json"], timeout=300, time_zone=None
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed"] is True and summary["run_id"] == killed["id"]
    assert summary["complete"] is True and summary["examined"] == legacy
    assert summary["inserted"] == mirrored_rows_of_jobs(db, "killed-") == legacy * 9
    assert view_of_jobs(db, "killed-") == before
    assert verify.verify(db).exit_code == 0


# ============================================================================================
# verify, status, the portal, the writer
# ============================================================================================


def test_verify_through_the_pooler_on_15k_region_results(
    db: psycopg.Connection[Any], pooler: Pooler
) -> None:
    """`beaconsql verify` on 15,000 region results (15 batches of the same statements)
    through the pool: the same report as directly (exit 3: all of them written before the
    mirror, not mirrored yet)."""
    assert write_legacy_history(db, "verify-", 7_500) == 15_000
    pooled = cli_run(
        ["verify", "--dsn", pooler.dsn(db.info.dbname), "--json"], timeout=300, time_zone=None
    )
    direct = cli_run(["verify", "--dsn", dsn_of(db), "--json"], timeout=300, time_zone=None)
    assert pooled.returncode == 3, pooled.stderr
    report = json.loads(pooled.stdout)
    assert report["region_results_examined"] == 15_000
    assert report["counts"]["not_mirrored"] == 15_000
    assert report == json.loads(direct.stdout)


def test_status_executions_and_progress_through_the_pooler(
    db: psycopg.Connection[Any], pooler: Pooler
) -> None:
    """`status`, `executions` (whole and paged) and `progress` print through the pool what
    they print directly; the portal's reads, repeated on one default psycopg connection
    through the pool (psycopg would prepare them), give the same rows every time: prepared
    statements are turned off on that connection, and kept on a direct one."""
    seed.record_with_writer(db, seed.jobspec(seed.SEED_JOBSPEC_ID))
    write_legacy_history(db, "status-", 3)
    pooled, direct = pooler.dsn(db.info.dbname), dsn_of(db)
    job = seed.SEED_JOBSPEC_ID
    for args in (
        ["status", "--json"],
        ["executions", job, "--json"],
        ["executions", job, "--limit", "5", "--offset", "2", "--json"],
        ["progress", job, "--json"],
        ["progress", job],
        ["executions", "--all", "--limit", "30", "--json"],
        ["execution", "1", "--json"],
    ):
        through = cli_run([*args, "--dsn", pooled], timeout=300, time_zone=None)
        assert through.returncode == 0, (args, through.stderr)
        assert (
            through.stdout == cli_run([*args, "--dsn", direct], timeout=300, time_zone=None).stdout
        ), args
    assert (
        len(
            json.loads(
                cli_run(
                    ["executions", job, "--json", "--dsn", pooled], timeout=300, time_zone=None
                ).stdout
            )["executions"]
        )
        == 18
    )

    expected = portal.executions_all(db, job)
    first = expected["executions"][0]["id"]
    other_reads = (
        lambda conn: portal.executions_list(conn, limit=7, offset=3),
        lambda conn: portal.execution_details(conn, first),
        lambda conn: portal.execution_receipt(conn, first),
        lambda conn: portal.cross_region_executions(conn, job, model_id="mistral-7b"),
        lambda conn: portal.cross_region_diff(conn, job)["executions"],
        lambda conn: portal.diffs(conn),
    )
    others = [read(db) for read in other_reads]
    with psycopg.connect(pooled, autocommit=True) as conn:
        assert conn.prepare_threshold == 5
        for _ in range(8):
            assert portal.executions_all(conn, job) == expected
            assert portal.progress(conn, job).to_dict()["done"] == 18
            assert [read(conn) for read in other_reads] == others
        assert conn.prepare_threshold is None
    with psycopg.connect(direct, autocommit=True) as conn:
        portal.executions_all(conn, job)
        assert conn.prepare_threshold == 5


def test_writer_on_a_default_connection_through_the_pooler_records_the_worked_example(
    db: psycopg.Connection[Any], pooler: Pooler
) -> None:
    """The seed's worked example recorded by the writer on a default psycopg connection
    opened through the pool, each call its own transaction (as the runner commits): the
    mirror derives its 18 rows, each with its own answer, and the view shows 18."""
    job = seed.SEED_JOBSPEC_ID
    with psycopg.connect(pooler.dsn(db.info.dbname), autocommit=True) as conn:
        recorded = seed.record_with_writer(conn, seed.jobspec(job))
    rows = db.execute(
        "SELECT e.model_id, e.question_id, e.region, e.status, e.output_data->>'response' "
        "FROM executions e JOIN jobs j ON j.id = e.job_id "
        "WHERE j.jobspec_id = %s AND e.mirror_region_result_id IS NOT NULL",
        (job,),
    ).fetchall()
    assert len(rows) == 18
    assert {r[3] for r in rows} == {"completed"}
    assert len({r[4] for r in rows}) == 18
    assert {r[2] for r in rows} == set(recorded.region_result_ids) == {"US", "EU"}
    assert len(portal.executions_all(db, job)["executions"]) == 18


# ============================================================================================
# upgrade
# ============================================================================================


def test_upgrade_through_the_pooler_stops_and_leaves_no_lock_timeout_behind(
    empty_db: psycopg.Connection[Any], pooler: Pooler
) -> None:
    """`beaconsql upgrade` through the pool exits 1 with one FAILED line asking for a direct
    DSN, before changing anything; so does Alembic's own entry (env.py). Neither leaves its
    lock_timeout on a server session of the pool (as a session SET through the pool does:
    the control at the end)."""
    name = empty_db.info.dbname
    pooler.warm(name)
    default = pooler.server_settings(name, "lock_timeout")
    assert set(default.values()) == {"0"}
    done = cli_run(["upgrade", "--dsn", pooler.dsn(name)], timeout=300, time_zone=None)
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "FAILED: the DSN goes through a connection pooler"
    ), done.stderr
    assert "Next step: rerun with --dsn" in lines[0] and "not the pooler's" in lines[0]
    assert done.stdout == ""
    with pytest.raises(MigrationError, match="goes through a connection pooler"):
        migration.upgrade(pooler.dsn(name))
    from alembic import command

    with pytest.raises(MigrationError, match="goes through a connection pooler"):
        command.upgrade(migration.alembic_config(pooler.dsn(name)), "head")
    assert empty_db.execute("SELECT to_regclass('public.alembic_version')").fetchone() == (None,)
    assert empty_db.execute("SELECT to_regclass('public.executions')").fetchone() == (None,)
    assert set(pooler.server_settings(name, "lock_timeout").values()) == {"0"}

    with psycopg.connect(pooler.dsn(name), autocommit=True) as conn:
        conn.execute(f"SET lock_timeout = '{migration.LOCK_TIMEOUT}'")
    assert sorted(pooler.server_settings(name, "lock_timeout").values()) == [
        "0",
        migration.LOCK_TIMEOUT,
    ]
