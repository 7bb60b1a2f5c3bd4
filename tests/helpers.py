"""Helpers the test modules share: reading rows, skipping triggers, running the CLI, waiting for
another connection. Data comes from factories.py; the expected rows from oracle.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from click.testing import CliRunner
from psycopg.rows import dict_row

from beaconsql import backfill
from beaconsql.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent
NEW_YORK = "America/New_York"
TRIGGER_TABLES = ("jobs", "cross_region_executions", "region_results", "executions")
UNREACHABLE_DSN = "postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2"
T0 = datetime(2025, 10, 12, 17, 0, 0, tzinfo=UTC)


def fetch(conn: psycopg.Connection[Any], query: str, params: Any = None) -> list[dict[str, Any]]:
    """Run *query* and return its rows as dicts."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


@contextmanager
def triggers_skipped(
    conn: psycopg.Connection[Any], tables: tuple[str, ...] = TRIGGER_TABLES
) -> Iterator[None]:
    """Write as if the triggers did not exist (the SPEC's way: ALTER TABLE, no session switch)."""
    for table in tables:
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    try:
        yield
    finally:
        for table in tables:
            conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def new_york(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(f"SET TimeZone = '{NEW_YORK}'")
    assert conn.execute("SHOW TimeZone").fetchone() == (NEW_YORK,)
    return conn


def run_backfill(dsn: str, **kwargs: Any) -> backfill.Summary:
    """Backfill from a connection of its own whose session TimeZone is America/New_York."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return backfill.backfill(new_york(conn), **kwargs)


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


def not_mirrored(conn: psycopg.Connection[Any]) -> set[Any]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT region_result_id FROM region_results_mirror_inputs WHERE NOT mirrored"
        )
    }


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


def cli(args: list[str], **kwargs: Any) -> Any:
    return CliRunner().invoke(cli_main, args, catch_exceptions=False, **kwargs)


def cli_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BEACONSQL_DATABASE_URL", "DATABASE_URL", "PGOPTIONS")
    }
    env["PGOPTIONS"] = f"-c TimeZone={NEW_YORK}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli_process(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """`python -m beaconsql.cli ARGS` as a process of its own (session TimeZone New York)."""
    return subprocess.Popen(
        [sys.executable, "-m", "beaconsql.cli", *args],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def cli_run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beaconsql.cli", *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_run(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    rows = fetch(conn, "SELECT * FROM region_results_backfill_runs ORDER BY id DESC LIMIT 1")
    assert rows
    return rows[0]


def wait_for_batches(
    conn: psycopg.Connection[Any], proc: subprocess.Popen[str], n: int, limit: float = 60.0
) -> int:
    """Poll region_results_backfill_runs until the running run saved *n* batches."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"backfill ended early: {proc.communicate()}"
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
