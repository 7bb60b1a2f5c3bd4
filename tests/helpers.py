"""Helpers the test modules share: reading rows and the mirror's rows, skipping triggers,
running the CLI (in-process and as a process), waiting for another connection. Data comes from
factories.py; the expected rows from oracle.py. A helper one module alone uses stays in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from click.testing import CliRunner, Result
from psycopg import conninfo, sql
from psycopg.rows import dict_row
from pytest_postgresql.janitor import DatabaseJanitor

from beaconsql import backfill
from beaconsql.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent
NEW_YORK = "America/New_York"
TRIGGER_TABLES = ("jobs", "cross_region_executions", "region_results", "executions")
UNREACHABLE_DSN = "postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2"
T0 = datetime(2025, 10, 12, 17, 0, 0, tzinfo=UTC)
# The password of the DSNs and login roles of the secrets tests: it must appear in no output.
PASSWORD = "S3cretPassw0rd"
# What region_results_mirror_apply reports when it finds nothing to do.
NOTHING_APPLIED = {
    "inserted": 0,
    "updated": 0,
    "deleted": 0,
    "detached": 0,
    "left_to_direct": 0,
    "anomalies": 0,
    "states": 0,
    "deferred": 0,
}
# The runner's cancel of a job (runner-app.md): every unfinished executions row of the job.
RUNNER_CANCEL = (
    "UPDATE executions SET status = 'cancelled', completed_at = NOW() "
    "WHERE job_id = %s AND status IN ('pending', 'running', 'processing', 'queued', 'retrying')"
)

# --------------------------------------------------------------------------------------------
# Reading rows
# --------------------------------------------------------------------------------------------


def fetch(conn: psycopg.Connection[Any], query: Any, params: Any = None) -> list[dict[str, Any]]:
    """Run *query* and return its rows as dicts."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def scalar(conn: psycopg.Connection[Any], query: Any, params: Any = None) -> Any:
    """Run *query* and return the first column of its first row (None when no row)."""
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def executions_xmins(conn: psycopg.Connection[Any]) -> dict[int, str]:
    return dict(conn.execute("SELECT id, xmin::text FROM executions").fetchall())


def state_xmins(conn: psycopg.Connection[Any]) -> dict[Any, str]:
    return dict(
        conn.execute(
            "SELECT region_result_id, xmin::text FROM region_results_mirror_state"
        ).fetchall()
    )


def sequence_state(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute("SELECT last_value, is_called FROM executions_id_seq").fetchone()
    assert row is not None
    return tuple(row)


def anomalies_table(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT region_result_id, kind, detail, first_seen FROM "
        "region_results_mirror_anomalies ORDER BY 1, 2, 3"
    ).fetchall()


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Everything a backfill could write, byte for byte (row versions included)."""
    return {
        "executions": executions_xmins(conn),
        "sequence": sequence_state(conn),
        "state": state_xmins(conn),
        "anomalies": anomalies_table(conn),
    }


VIEW_COLUMNS = (
    "region_result_id, cross_region_execution_id, job_id, jobspec_id, region, provider_id, "
    "model_id, question_id, status, evidence, started_at, completed_at, created_at, "
    "duration_ms, output_data::text, receipt_data::text, original_error, system_prompt, "
    "response_classification, is_substantive, is_content_refusal, is_technical_error, "
    "response_length, retry_count, max_retries, last_retry_at, retry_history::text"
)


def view_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """executions_unified, every column but execution_id and source, in a total order."""
    rows = conn.execute(f"SELECT {VIEW_COLUMNS} FROM executions_unified").fetchall()
    return sorted(rows, key=repr)


def mirrored_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM executions WHERE mirror_region_result_id IS NOT NULL"
    ).fetchone()
    assert row is not None
    return int(row[0])


def region_result_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM region_results").fetchone()
    assert row is not None
    return int(row[0])


def region_exists(conn: psycopg.Connection[Any], region_result_id: uuid.UUID) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM region_results WHERE id = %s", (region_result_id,)
    ).fetchone()
    return row == (1,)


def not_mirrored(conn: psycopg.Connection[Any]) -> set[Any]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT region_result_id FROM region_results_mirror_inputs WHERE NOT mirrored"
        )
    }


# --------------------------------------------------------------------------------------------
# The mirror's rows of a region result, and a job's rows as the runner reads them
# --------------------------------------------------------------------------------------------


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


def assert_one_row_per_key_of_job(
    conn: psycopg.Connection[Any], job_id: int
) -> list[dict[str, Any]]:
    """The runner's naive read of a job shows one row per key; return the job's rows."""
    rows = job_rows(conn, job_id)
    keys = keys_of(rows)
    assert len(keys) == len(set(keys)), f"duplicate keys: {sorted(keys)}"
    return rows


def assert_one_mirrored_row_per_key(conn: psycopg.Connection[Any]) -> None:
    """The runner's naive read never shows a mirrored row beside a direct one, nor two
    mirrored rows of one region result and pair."""
    beside = conn.execute(
        "SELECT m.id, d.id FROM executions m JOIN executions d "
        "ON d.mirror_region_result_id IS NULL AND d.job_id = m.job_id AND d.region = m.region "
        "AND d.model_id = m.model_id AND d.question_id = m.question_id "
        "WHERE m.mirror_region_result_id IS NOT NULL"
    ).fetchall()
    assert beside == []
    dups = conn.execute(
        "SELECT mirror_region_result_id, model_id, question_id, count(*) FROM executions "
        "WHERE mirror_region_result_id IS NOT NULL GROUP BY 1, 2, 3 HAVING count(*) > 1"
    ).fetchall()
    assert dups == []


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


def anomaly_kinds(conn: psycopg.Connection[Any], region_result_id: uuid.UUID) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT kind FROM region_results_mirror_anomalies WHERE region_result_id = %s "
            "ORDER BY kind, detail",
            (region_result_id,),
        ).fetchall()
    ]


def apply(conn: psycopg.Connection[Any], region_result_id: uuid.UUID) -> dict[str, int]:
    """Apply the mirror to one region result; return its counts (one row is asserted)."""
    rows = fetch(
        conn, "SELECT * FROM region_results_mirror_apply(ARRAY[%s]::uuid[])", (region_result_id,)
    )
    assert len(rows) == 1
    return rows[0]


# --------------------------------------------------------------------------------------------
# Writing as if the triggers did not exist
# --------------------------------------------------------------------------------------------


@contextmanager
def cloned_database(template: Any, name: str) -> Iterator[psycopg.Connection[Any]]:
    """Clone *template*'s template database (a pytest-postgresql noproc fixture, e.g. the
    session's ``postgresql_head``) into a database of its own, for a module whose tests only
    read what it recorded once; yield an autocommit connection; drop it at the end. The name
    carries the process id (test sessions share the server)."""
    dbname = f"{name}_{os.getpid()}"
    janitor = DatabaseJanitor(
        user=template.user,
        host=template.host,
        port=template.port,
        dbname=dbname,
        template_dbname=template.template_dbname,
        password=template.password,
    )
    janitor.drop()
    with janitor:
        dsn = conninfo.make_conninfo(
            host=str(template.host),
            port=str(template.port),
            user=template.user,
            dbname=dbname,
            password=template.password or None,
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            yield conn


@contextmanager
def triggers_skipped(
    conn: psycopg.Connection[Any], tables: tuple[str, ...] = TRIGGER_TABLES
) -> Iterator[None]:
    """Write as if the triggers did not exist (the SPEC's way: ALTER TABLE, no session switch)."""
    for table in tables:
        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(sql.Identifier(table)))
    try:
        yield
    finally:
        for table in tables:
            conn.execute(
                sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(sql.Identifier(table))
            )


def new_york(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(f"SET TimeZone = '{NEW_YORK}'")
    assert conn.execute("SHOW TimeZone").fetchone() == (NEW_YORK,)
    return conn


def run_backfill(dsn: str, **kwargs: Any) -> backfill.Summary:
    """Backfill from a connection of its own whose session TimeZone is America/New_York."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return backfill.backfill(new_york(conn), **kwargs)


# --------------------------------------------------------------------------------------------
# The CLI: in-process, and as a process of its own
# --------------------------------------------------------------------------------------------

NO_DSN_ENV: dict[str, str | None] = {"BEACONSQL_DATABASE_URL": None, "DATABASE_URL": None}


def cli(
    args: Sequence[str],
    *,
    dsn: str | None = None,
    env: dict[str, str | None] | None = None,
    **kwargs: Any,
) -> Result:
    """Invoke ``beaconsql ARGS`` in-process (click's CliRunner; an exception the command does
    not turn into an exit propagates), with no DSN in the environment unless *dsn* is given
    (then as BEACONSQL_DATABASE_URL) or *env* sets one."""
    environment = dict(NO_DSN_ENV)
    if dsn is not None:
        environment["BEACONSQL_DATABASE_URL"] = dsn
    environment.update(env or {})
    return CliRunner().invoke(
        cli_main, list(args), env=environment, catch_exceptions=False, **kwargs
    )


def cli_env(*, time_zone: str | None = NEW_YORK, **extra: str) -> dict[str, str]:
    """The environment of a CLI process: this one's without its DSN variables and PGOPTIONS,
    the session TimeZone *time_zone* (None: the server's; a pooler refuses PGOPTIONS), output
    unbuffered, then *extra*."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BEACONSQL_DATABASE_URL", "DATABASE_URL", "PGOPTIONS")
    }
    if time_zone is not None:
        env["PGOPTIONS"] = f"-c TimeZone={time_zone}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def cli_process(
    args: Sequence[str], *, time_zone: str | None = NEW_YORK, **env: str
) -> subprocess.Popen[str]:
    """Start ``python -m beaconsql.cli ARGS`` as a process of its own (environment:
    :func:`cli_env`); text out."""
    return subprocess.Popen(
        [sys.executable, "-m", "beaconsql.cli", *args],
        cwd=REPO,
        env=cli_env(time_zone=time_zone, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cli_run(
    args: Sequence[str | bytes],
    *,
    timeout: float = 120,
    time_zone: str | None = NEW_YORK,
    text: bool = True,
    **env: str,
) -> subprocess.CompletedProcess[Any]:
    """Run ``python -m beaconsql.cli ARGS`` as a process of its own (environment:
    :func:`cli_env`) to its end; text out, or bytes with ``text=False``."""
    return subprocess.run(
        [sys.executable, "-m", "beaconsql.cli", *args],
        cwd=REPO,
        env=cli_env(time_zone=time_zone, **env),
        capture_output=True,
        text=text,
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------------------------
# The backfill's runs, and waiting for another session
# --------------------------------------------------------------------------------------------


def last_run(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    rows = fetch(conn, "SELECT * FROM region_results_backfill_runs ORDER BY id DESC LIMIT 1")
    assert rows
    return rows[0]


def wait_for_batches(
    conn: psycopg.Connection[Any],
    procs: subprocess.Popen[str] | Sequence[subprocess.Popen[str]],
    n: int,
    limit: float = 60.0,
) -> int:
    """Poll region_results_backfill_runs until the running run saved *n* batches, every
    backfill process of *procs* (one or several) still alive."""
    alive = [procs] if isinstance(procs, subprocess.Popen) else list(procs)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for proc in alive:
            assert proc.poll() is None, f"a backfill ended early: {proc.communicate()}"
        row = conn.execute(
            "SELECT max(batches) FROM region_results_backfill_runs WHERE status = 'running'"
        ).fetchone()
        if row and row[0] is not None and row[0] >= n:
            return int(row[0])
        time.sleep(0.02)
    raise AssertionError(f"the backfill did not reach {n} batches within {limit}s")


def wait_lock_released(conn: psycopg.Connection[Any], limit: float = 30.0) -> None:
    """Wait until no live run holds the backfill lease (a killed client's server session has
    ended, or its lease expired)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        holder = backfill.lease_holder(conn)
        if holder is None or holder.lapsed:
            return
        time.sleep(0.05)
    raise AssertionError(f"a backfill still holds the lease: {backfill.lease_holder(conn)}")


def wait_blocked_or_done(
    observer: psycopg.Connection[Any], pid: int, thread: threading.Thread, limit: float = 20.0
) -> None:
    """Wait until backend *pid* waits on a lock (or sleeps between the mirror's all-or-nothing
    row-lock attempts), or *thread* has finished (a side that does not block is not an error
    here: the final state is what the tests assert)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not thread.is_alive():
            return
        row = observer.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        if row is not None and row[0] == "Lock":
            return
        wait = observer.execute(
            "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        if wait is not None and wait[0] == "PgSleep":
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} neither blocked nor finished within {limit}s")


def run_blocking(
    observer: psycopg.Connection[Any],
    first: psycopg.Connection[Any],
    second: psycopg.Connection[Any],
    first_step: Callable[[], Any],
    second_step: Callable[[], Any],
) -> None:
    """READ COMMITTED race: *first* runs its step in an open transaction; *second* runs its
    step in a thread (blocking on a lock *first* holds) and commits; then *first* commits and
    the thread is joined. Any exception of the thread is re-raised."""
    errors: list[BaseException] = []

    def second_side() -> None:
        try:
            second_step()
            second.commit()
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)
            second.rollback()

    first_step()
    thread = threading.Thread(target=second_side)
    thread.start()
    wait_blocked_or_done(observer, second.info.backend_pid, thread)
    first.commit()
    thread.join(30)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def hold_mirror_lock(
    conn: psycopg.Connection[Any], job_id: int | None, region: str, region_result_id: Any = None
) -> None:
    """Take the mirror's (job_id, region) lock in *conn*'s open transaction, as the mirror's
    triggers do (a row lock on executions_mirror_locks, held until the transaction ends)."""
    conn.execute(
        "SELECT executions_mirror_lock(ARRAY[executions_mirror_lock_key(%s, %s, %s)])",
        (job_id, region, region_result_id),
    )


def waiting_backends(conn: psycopg.Connection[Any], application_name: str = "beaconsql") -> int:
    """How many backends of *application_name* in this database wait for a lock."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = %s "
        "AND cardinality(pg_blocking_pids(pid)) > 0",
        (application_name,),
    ).fetchone()
    return int(row[0]) if row else 0


def curl(url: str) -> tuple[int, Any]:
    """GET *url* with curl; return (status, parsed JSON body)."""
    out = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", url], check=True, capture_output=True, text=True
    ).stdout
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body)
