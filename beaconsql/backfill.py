"""Bring history into ``executions`` online, and repair drift (``beaconsql backfill``).

Every region result that is not mirrored (SPEC "Mirror state") is brought to mirrored, and
drift is repaired (missing, stale or orphaned mirrored rows, a mirrored row beside a direct
one), by the very function the triggers use, ``region_results_mirror_apply``: the backfill
never re-implements the rule. How (anchors: pgroll, GitLab's batched migrations):

- keyset batches over ``region_results.id`` up to a high-water mark read when the run starts
  (the triggers exist by then; later rows are theirs), so a run terminates under live inserts;
  then a pass over region results deleted while triggers were skipped (whole-database runs);
- each batch is one short transaction with ``lock_timeout`` and ``statement_timeout``, taking
  the triggers' per-(job_id, region) locks; a deadlock, serialization failure or lock timeout
  is retried with jittered backoff; a statement timeout halves the batch;
- the cursor and counts are saved in the batch's transaction; an interrupted run resumes from
  its cursor, a completed one clears it; a session advisory lock refuses a second runner;
- ``lock_timeout`` stays below the server's ``deadlock_timeout``, so that in a deadlock with a
  writer the backfill gives up first and the writer never sees it;
- memory holds one batch of ids, whatever the history's size.
"""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from beaconsql import migration
from beaconsql.errors import (
    BackfillBusyError,
    BeaconsqlError,
    DatabaseUnavailableError,
    InvalidArgumentError,
)
from beaconsql.sqlfiles import named_queries

logger = logging.getLogger(__name__)

# Session advisory lock of the single runner: the bytes "bcnbkfil" as a positive bigint.
BACKFILL_LOCK_KEY = int.from_bytes(b"bcnbkfil", "big") & 0x7FFF_FFFF_FFFF_FFFF
NIL_UUID = uuid.UUID(int=0)
DEFAULT_BATCH_SIZE = 500
# A batch is one short transaction holding its region results' locks: beyond this it is not short.
MAX_BATCH_SIZE = 100_000
MAX_SLEEP = 3600.0  # seconds between batches; more is a mistake, not a throttle
STATEMENT_TIMEOUT = "60s"
MAX_ATTEMPTS = 6
RETRYABLE = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
)
COUNTS = ("inserted", "updated", "deleted", "detached", "left_to_direct", "anomalies", "states")
# Tables a backfill fills, analyzed again whenever its writes to them since their last ANALYZE
# (rows) exceed both this and their size then: see _Run._keep_statistics.
ANALYZE_AFTER_ROWS = 1_000


def _queries() -> Mapping[str, Any]:
    return named_queries("queries/backfill.sql")


@dataclass
class Summary:
    """What a backfill run did (or, with ``dry_run``, would do).

    ``examined`` counts region results (and, in the last pass, ids of deleted ones);
    ``inserted``/``updated``/``deleted``/``detached`` count executions rows; ``left_to_direct``
    keys the rule yields but a direct row owns; ``anomalies`` new anomalies recorded;
    ``states`` mirror states recorded or dropped; ``max_batch_rows`` the most executions rows
    one batch transaction changed.
    """

    run_id: int | None = None
    resumed: bool = False
    dry_run: bool = False
    complete: bool = False
    batches: int = 0
    examined: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    detached: int = 0
    left_to_direct: int = 0
    anomalies: int = 0
    states: int = 0
    max_batch_rows: int = 0
    elapsed_seconds: float = 0.0
    scope: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        """Executions rows written (0 on a second run over unchanged data)."""
        return self.inserted + self.updated + self.deleted + self.detached

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["changed"] = self.changed
        return out


ProgressCallback = Callable[[int, int], None]


def _lock_timeout(conn: psycopg.Connection[Any]) -> str:
    """Half the server's deadlock_timeout (at most 1 s): in a deadlock with a writer the
    backfill times out before either side runs the deadlock check, so the writer proceeds."""
    row = conn.execute(
        "SELECT least(1000, greatest(50, (setting::numeric * "
        "CASE unit WHEN 's' THEN 1000 ELSE 1 END / 2)::int)) "
        "FROM pg_catalog.pg_settings WHERE name = 'deadlock_timeout'"
    ).fetchone()
    return f"{int(row[0]) if row else 500}ms"


def backfill(
    conn: psycopg.Connection[Any],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    job: str | None = None,
    since: datetime | None = None,
    sleep: float = 0.0,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Summary:
    """Backfill the database of *conn* (an autocommit connection of its own).

    *job* limits the run to one jobspec_id's region results; *since* to region results whose
    ``updated_at`` is at or after it; *sleep* pauses (seconds) between batches; *dry_run*
    computes the same summary and writes nothing (no run is recorded). *progress* is called
    with (done, total) region results after each batch; *should_stop* is polled between
    batches: when it returns True the run stops, recorded as interrupted, resumable.

    Raises InvalidArgumentError (bad option), NotMigratedError, BackfillBusyError (another
    run holds the lock), DatabaseUnavailableError (connection lost: rerun to resume),
    BeaconsqlError (a batch of a single region result still ran past the statement timeout).
    """
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidArgumentError(
            f"batch size must be an integer from 1 to {MAX_BATCH_SIZE}, got {batch_size!r}"
        )
    if not math.isfinite(sleep) or not 0 <= sleep <= MAX_SLEEP:
        raise InvalidArgumentError(f"sleep must be from 0 to {MAX_SLEEP:g} seconds, got {sleep!r}")
    if not conn.autocommit:
        raise InvalidArgumentError("backfill needs an autocommit connection of its own")
    migration.require_head(conn)
    started = time.monotonic()
    scope = {"job": job, "since": since}
    summary = Summary(dry_run=dry_run, scope={"job": job, "since": since and since.isoformat()})
    _take_runner_lock(conn)
    try:
        runner = _Run(conn, summary, scope, batch_size, sleep, dry_run, progress, should_stop)
        runner.run()
    finally:
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (BACKFILL_LOCK_KEY,))
        except psycopg.Error:
            pass  # the session is gone, and its lock with it
    summary.elapsed_seconds = round(time.monotonic() - started, 3)
    return summary


def _take_runner_lock(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (BACKFILL_LOCK_KEY,)).fetchone()
    if row and row[0]:
        return
    holder = conn.execute(_queries()["lock_holder"], {"key": BACKFILL_LOCK_KEY}).fetchone()
    who = "another session"
    if holder:
        who = f"backend pid {holder[0]}, {holder[1] or 'no application name'}, since {holder[3]:%c}"
    raise BackfillBusyError(
        f"another backfill is running on this database ({who}). Wait for it to finish, or "
        "stop it: an interrupted run resumes from its cursor."
    )


class _Run:
    """One backfill run: its persisted record, its batches, its retries."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        summary: Summary,
        scope: dict[str, Any],
        batch_size: int,
        sleep: float,
        dry_run: bool,
        progress: ProgressCallback | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.conn = conn
        self.summary = summary
        self.scope = scope
        self.batch_size = batch_size
        self.sleep = sleep
        self.dry_run = dry_run
        self.progress = progress
        self.should_stop = should_stop or (lambda: False)
        self.lock_timeout = _lock_timeout(conn)
        self.cursor = NIL_UUID
        self.phase = "region_results"
        self.high_water_mark: uuid.UUID | None = None
        self.rows_since_analyze = 0
        self.rows_at_analyze = 0

    def run(self) -> None:
        q = _queries()
        if not self.dry_run:
            for (table,) in self.conn.execute(q["never_analyzed"]).fetchall():
                logger.info("analyzing %s (it has no statistics yet)", table)
                self.conn.execute(sql.SQL("ANALYZE public.{}").format(sql.Identifier(table)))
            row = self.conn.execute(q["executions_size"]).fetchone()
            self.rows_at_analyze = int(row[0]) if row else 0
        self._open()
        total = 0
        if self.phase == "region_results" and self.high_water_mark is not None:
            row = self.conn.execute(
                q["count_in_scope"],
                {**self.scope, "cursor": self.cursor, "high_water_mark": self.high_water_mark},
            ).fetchone()
            total = int(row[0]) if row else 0
        done = 0
        if self.progress:
            self.progress(done, total)
        try:
            if self.phase == "region_results":
                while self.high_water_mark is not None:
                    if self._stopping():
                        return
                    n = self._batch("next_batch")
                    if n == 0:
                        break
                    done += n
                    if self.progress:
                        self.progress(done, max(total, done))
                    self._pause()
                self.phase = "orphans"
                self.cursor = NIL_UUID
                if not self.dry_run:
                    self.conn.execute(
                        q["set_phase"], {"phase": "orphans", "run_id": self.summary.run_id}
                    )
            # Deleted region results have no updated_at: a --since run leaves them to others.
            if self.phase == "orphans" and self.scope["since"] is None:
                while True:
                    if self._stopping():
                        return
                    if self._batch("next_orphans") == 0:
                        break
                    self._pause()
        except psycopg.OperationalError as exc:
            if migration.is_connection_failure(exc):
                raise DatabaseUnavailableError(
                    f"the connection was lost during the backfill ({migration.describe(exc)}). "
                    f"Nothing is half-done: rerun `beaconsql backfill` to resume from region "
                    f"result {self.cursor}."
                ) from None
            self._record_stop("failed", migration.describe(exc))
            raise
        except Exception as exc:
            self._record_stop("failed", migration.describe(exc))
            raise
        if not self.dry_run:
            self.conn.execute(q["finish_run"], {"run_id": self.summary.run_id})
        self.summary.complete = True
        logger.info(
            "backfill complete: %d region results examined, %d executions rows changed",
            self.summary.examined,
            self.summary.changed,
        )

    def _open(self) -> None:
        """Resume an unfinished run of the same scope, or start one (not for a dry run)."""
        q = _queries()
        if not self.dry_run:
            row = self.conn.execute(q["open_run"], self.scope).fetchone()
            if row is not None:
                (run_id, hwm, cursor, phase, batches, *counts) = row
                self.summary.run_id, self.summary.resumed = int(run_id), True
                self.high_water_mark = hwm
                self.cursor = cursor or NIL_UUID
                self.phase = str(phase)
                self.summary.batches = int(batches)
                for name, value in zip(
                    ("examined", *COUNTS, "max_batch_rows"), counts, strict=True
                ):
                    setattr(self.summary, name, int(value))
                logger.info(
                    "resuming backfill run %s from %s (%s)", run_id, self.cursor, self.phase
                )
                return
        row = self.conn.execute(q["high_water_mark"], self.scope).fetchone()
        self.high_water_mark = row[0] if row else None
        if not self.dry_run:
            row = self.conn.execute(
                q["start_run"], {**self.scope, "high_water_mark": self.high_water_mark}
            ).fetchone()
            assert row is not None
            self.summary.run_id = int(row[0])

    def _stopping(self) -> bool:
        if not self.should_stop():
            return False
        self._record_stop("interrupted", None)
        logger.info("backfill stopped at %s; rerun to resume", self.cursor)
        return True

    def _record_stop(self, status: str, error: str | None) -> None:
        if self.dry_run or self.summary.run_id is None:
            return
        try:
            self.conn.execute(
                _queries()["stop_run"],
                {"status": status, "error": error, "run_id": self.summary.run_id},
            )
        except psycopg.Error:
            logger.warning("could not record the backfill run as %s", status)

    def _pause(self) -> None:
        if self.sleep:
            time.sleep(self.sleep)

    def _batch(self, query: str) -> int:
        """Run one batch in its own transaction, with retries; return the ids it examined."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._batch_once(query)
            except RETRYABLE as exc:
                if attempt >= MAX_ATTEMPTS:
                    raise
                pause = min(5.0, 0.05 * 2**attempt) * (0.5 + random.random())
                logger.info("batch retried in %.2fs after %s", pause, type(exc).__name__)
                time.sleep(pause)
            except psycopg.errors.QueryCanceled as exc:
                if self.batch_size == 1:
                    raise BeaconsqlError(
                        f"database error 57014: a batch of one region result (the first after "
                        f"{self.cursor}) ran past the backfill's statement_timeout of "
                        f"{STATEMENT_TIMEOUT} ({migration.describe(exc)}). Nothing is half-done. "
                        "Next step: look at that region result (the size of its execution_output) "
                        "and at the server's load, then rerun `beaconsql backfill` to resume."
                    ) from exc
                self.batch_size = max(1, self.batch_size // 2)
                logger.warning("statement timeout: batch size lowered to %d", self.batch_size)

    def _batch_once(self, query: str) -> int:
        q = _queries()
        with self.conn.transaction():
            self.conn.execute(f"SET LOCAL lock_timeout = '{self.lock_timeout}'")
            self.conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
            ids = [
                row[0]
                for row in self.conn.execute(
                    q[query],
                    {
                        **self.scope,
                        "cursor": self.cursor,
                        "high_water_mark": self.high_water_mark,
                        "batch_size": self.batch_size,
                    },
                )
            ]
            if not ids:
                return 0
            row = self.conn.execute(q["apply"], {"ids": ids, "dry_run": self.dry_run}).fetchone()
            assert row is not None
            counts = dict(zip(COUNTS, (int(v) for v in row), strict=True))
            batch_rows = (
                counts["inserted"] + counts["updated"] + counts["deleted"] + counts["detached"]
            )
            if not self.dry_run:
                self.conn.execute(
                    q["save_progress"],
                    {
                        "run_id": self.summary.run_id,
                        "cursor": ids[-1],
                        "phase": self.phase,
                        "examined": len(ids),
                        "batch_rows": batch_rows,
                        **counts,
                    },
                )
        self.cursor = ids[-1]
        self.summary.batches += 1
        self.summary.examined += len(ids)
        self.summary.max_batch_rows = max(self.summary.max_batch_rows, batch_rows)
        for name, value in counts.items():
            setattr(self.summary, name, getattr(self.summary, name) + value)
        logger.info(
            "batch %d: %d region results, %d rows changed",
            self.summary.batches,
            len(ids),
            batch_rows,
        )
        self._keep_statistics(batch_rows)
        return len(ids)

    def _keep_statistics(self, batch_rows: int) -> None:
        """ANALYZE executions and the mirror state once the backfill has written more rows to
        them than they held at their last ANALYZE (and at least ANALYZE_AFTER_ROWS).

        The mirror functions cache one plan per statement for the session (see
        region_results_mirror_plan), built from the statistics of the moment: a plan built while
        executions was nearly empty reads it through whole-index scans, and a backfill is what
        fills it, so each batch would cost more than the last. New statistics invalidate the
        cached plans (PostgreSQL manual, "Plan Caching" under PREPARE); autovacuum would get
        there too, later.
        """
        self.rows_since_analyze += batch_rows
        if self.dry_run or self.rows_since_analyze < max(ANALYZE_AFTER_ROWS, self.rows_at_analyze):
            return
        logger.info(
            "analyzing executions and the mirror state (%d rows written)", self.rows_since_analyze
        )
        self.conn.execute(_queries()["analyze_mirrored"])
        self.rows_at_analyze += self.rows_since_analyze
        self.rows_since_analyze = 0


def last_runs(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Return the last completed run and the unfinished one (for ``beaconsql status``)."""
    row = conn.execute(_queries()["last_runs"]).fetchone()
    return {"last_completed": row[0] if row else None, "unfinished": row[1] if row else None}
