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
  its cursor, a completed one clears it;
- a single runner, without session state (so that it holds through a transaction pooler): the
  running run's row is a lease, taken in a short transaction, renewed by a heartbeat before and
  with each batch, ended with the run; a second run is refused, naming the holder, until the
  lease lapses (expired, or, for a direct connection, the holder's server session ended). Each
  write of the run is fenced by the lease: a run that lost it stops, its batch rolled back;
- ``lock_timeout`` stays below the server's ``deadlock_timeout``, so that in a deadlock with a
  writer the backfill gives up first and the writer never sees it;
- memory holds one batch of ids, whatever the history's size.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from beaconsql import db, migration
from beaconsql.errors import (
    BackfillBusyError,
    BeaconsqlError,
    DatabaseUnavailableError,
    InvalidArgumentError,
)
from beaconsql.sqlfiles import named_queries

logger = logging.getLogger(__name__)

NIL_UUID = uuid.UUID(int=0)
DEFAULT_BATCH_SIZE = 500
STATEMENT_TIMEOUT_SECONDS = 60
STATEMENT_TIMEOUT = f"{STATEMENT_TIMEOUT_SECONDS}s"
# A batch attempt's statements are bounded by the statement timeout; the lease outlasts two of
# them (plus the pause between batches) before another run may take over.
LEASE_BATCHES = 2
PAUSE_POLL_SECONDS = 0.1
# A batch is one short transaction holding its region results' locks: beyond this it is not short.
MAX_BATCH_SIZE = 100_000
MAX_SLEEP = 3600.0  # seconds between batches; more is a mistake, not a throttle
MAX_ATTEMPTS = 6


class _BatchBusy(Exception):
    """A batch found rows another transaction holds (the apply deferred them): roll it back
    and retry it, as after a lock timeout."""


RETRYABLE = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
    _BatchBusy,
)
COUNTS = (
    "inserted",
    "updated",
    "deleted",
    "detached",
    "left_to_direct",
    "anomalies",
    "states",
    "deferred",
)
# Tables a backfill fills, analyzed again whenever its writes to them since their last ANALYZE
# (rows) exceed both ANALYZE_AFTER_ROWS and ANALYZE_GROWTH times their size then: see
# _Run._keep_statistics.
ANALYZE_AFTER_ROWS = 1_000
ANALYZE_GROWTH = 4


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
    deferred: int = 0
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
    lease_seconds: float | None = None,
) -> Summary:
    """Backfill the database of *conn* (an autocommit connection of its own).

    *job* limits the run to one jobspec_id's region results; *since* to region results whose
    ``updated_at`` is at or after it; *sleep* pauses (seconds) between batches; *dry_run*
    computes the same summary and writes nothing (no run is recorded, no lease taken; it is
    refused while a run holds the lease). *progress* is called with (done, total) region
    results after each batch; *should_stop* is polled between batches: when it returns True
    the run stops, recorded as interrupted, resumable. *lease_seconds* is how long the run's
    lease lasts without a heartbeat, i.e. how long a killed run keeps the next one out when
    its server session cannot be seen to end (through a pooler): by default
    :func:`default_lease_seconds`.

    Raises InvalidArgumentError (bad option), NotMigratedError, BackfillBusyError (another
    run holds the lease, or took it over from this one), DatabaseUnavailableError (connection
    lost: rerun to resume), BeaconsqlError (a batch of a single region result still ran past
    the statement timeout).
    """
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidArgumentError(
            f"batch size must be an integer from 1 to {MAX_BATCH_SIZE}, got {batch_size!r}"
        )
    if not math.isfinite(sleep) or not 0 <= sleep <= MAX_SLEEP:
        raise InvalidArgumentError(f"sleep must be from 0 to {MAX_SLEEP:g} seconds, got {sleep!r}")
    if lease_seconds is None:
        lease_seconds = default_lease_seconds(sleep)
    if not math.isfinite(lease_seconds) or lease_seconds <= 0:
        raise InvalidArgumentError(f"lease must be a number of seconds > 0, got {lease_seconds!r}")
    if not conn.autocommit:
        raise InvalidArgumentError("backfill needs an autocommit connection of its own")
    db.adapt_to_pooler(conn)
    migration.require_head(conn)
    started = time.monotonic()
    scope = {"job": job, "since": since}
    summary = Summary(dry_run=dry_run, scope={"job": job, "since": since and since.isoformat()})
    lease = _Lease(conn, float(lease_seconds))
    runner = _Run(conn, lease, summary, scope, batch_size, sleep, dry_run, progress, should_stop)
    try:
        runner.run()
    finally:
        lease.release()
    summary.elapsed_seconds = round(time.monotonic() - started, 3)
    return summary


def default_lease_seconds(sleep: float = 0.0) -> float:
    """Return the lease a run takes: LEASE_BATCHES batch attempts, each bounded by the statement
    timeout, plus the pause between batches (seconds)."""
    return float(LEASE_BATCHES * STATEMENT_TIMEOUT_SECONDS) + sleep


@dataclass(frozen=True)
class LeaseHolder:
    """The run holding the single-runner lease, as ``lease_holder`` reads it."""

    run_id: int
    token: uuid.UUID
    host: str | None
    pid: int | None
    application: str | None
    taken_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    heartbeat_age_seconds: float
    lapsed: bool

    def describe(self) -> str:
        """Say who holds the lease, since when, and its last heartbeat (times in UTC)."""
        who = ", ".join(
            part
            for part in (
                f"host {self.host}" if self.host else "",
                f"pid {self.pid}" if self.pid is not None else "",
                f"application {self.application}" if self.application else "",
            )
            if part
        )
        return (
            f"run #{self.run_id} ({who or 'unknown holder'}), running since {_utc(self.taken_at)}, "
            f"last heartbeat {_utc(self.heartbeat_at)} ({self.heartbeat_age_seconds:.0f}s ago), "
            f"lease until {_utc(self.expires_at)} unless renewed"
        )


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def lease_holder(conn: psycopg.Connection[Any]) -> LeaseHolder | None:
    """Return the run holding the backfill lease (lapsed or not), or None."""
    row = conn.execute(_queries()["lease_holder"]).fetchone()
    return None if row is None else LeaseHolder(*row)


class _Lease:
    """This run's hold on the single-runner lease: taken with the run's row, renewed, fenced."""

    def __init__(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        self.conn = conn
        self.seconds = seconds
        self.token = uuid.uuid4()
        self.run_id: int | None = None
        self.direct = not db.behind_pooler(conn)

    def params(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "token": self.token, "lease_seconds": self.seconds}

    def check_free(self) -> None:
        """Raise BackfillBusyError while a run holds the lease (for a dry run, which takes none)."""
        holder = lease_holder(self.conn)
        if holder is not None and not holder.lapsed:
            raise _busy(holder)

    def take(self, scope: dict[str, Any]) -> tuple[bool, tuple[Any, ...]]:
        """Take the lease on the newest unfinished run of *scope*, or on a new run; return
        (resumed, the run's row: id, high-water mark, cursor, phase, batches and counts). A
        lapsed lease is reclaimed first (its run becomes 'interrupted'). Raises
        BackfillBusyError while another run holds it."""
        q = _queries()
        taker = {
            **scope,
            "token": self.token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "direct": self.direct,
            "lease_seconds": self.seconds,
        }
        for _ in range(3):
            try:
                with self.conn.transaction():
                    holder = lease_holder(self.conn)
                    if holder is not None:
                        if not holder.lapsed:
                            raise _busy(holder)
                        reclaimed = self.conn.execute(
                            q["reclaim_lease"],
                            {
                                "run_id": holder.run_id,
                                "token": holder.token,
                                "heartbeat_at": holder.heartbeat_at,
                            },
                        ).fetchone()
                        if reclaimed is None:
                            continue  # renewed meanwhile: look again
                        logger.info(
                            "run #%d's lease lapsed (last heartbeat %s): taking over",
                            holder.run_id,
                            _utc(holder.heartbeat_at),
                        )
                    row = self.conn.execute(q["resume_run"], taker).fetchone()
                    resumed = row is not None
                    if row is None:
                        found = self.conn.execute(q["high_water_mark"], scope).fetchone()
                        row = self.conn.execute(
                            q["start_run"],
                            {**taker, "high_water_mark": found[0] if found else None},
                        ).fetchone()
                        assert row is not None
                    self.run_id = int(row[0])
                    return resumed, tuple(row)
            except psycopg.errors.UniqueViolation:
                continue  # another run took the lease at the same moment: look again
        holder = lease_holder(self.conn)
        if holder is not None:
            raise _busy(holder)
        raise BackfillBusyError(
            "could not take the backfill lease: other runs kept taking it. Rerun in a moment."
        )

    def renew(self) -> None:
        """Heartbeat: extend the lease; raise BackfillBusyError if this run lost it."""
        self.fenced("heartbeat", self.params())

    def fenced(self, query: str, params: dict[str, Any]) -> None:
        """Run a write of this run that holds only while it holds the lease."""
        if self.conn.execute(_queries()[query], params).fetchone() is None:
            holder = lease_holder(self.conn)
            raise BackfillBusyError(
                f"backfill run #{self.run_id} lost its lease"
                + (f" to {holder.describe()}" if holder and holder.token != self.token else "")
                + ": no heartbeat came within its lease of "
                f"{self.seconds:g}s (a batch, a pause or the server took longer). Nothing is "
                "half-done; rerun `beaconsql backfill` once no other run holds the lease."
            )

    def release(self) -> None:
        """End the lease if this run still holds it, recording the run as interrupted (a run
        stopped by an exception that was not recorded, e.g. a second Ctrl-C)."""
        if self.run_id is None:
            return
        try:
            self.conn.execute(
                _queries()["stop_run"], {**self.params(), "status": "interrupted", "error": None}
            )
        except psycopg.Error:
            pass  # the connection is gone: the lease lapses with its session, or expires


def _busy(holder: LeaseHolder) -> BackfillBusyError:
    return BackfillBusyError(
        f"another backfill is running on this database: {holder.describe()}. Wait for it to "
        "finish, or stop it (Ctrl-C or SIGTERM: it stops after its batch and resumes from its "
        "cursor next time); a killed run's lease lapses once its server session has ended, "
        "or, through a connection pooler, when the lease expires."
    )


class _Run:
    """One backfill run: its persisted record, its batches, its retries."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        lease: _Lease,
        summary: Summary,
        scope: dict[str, Any],
        batch_size: int,
        sleep: float,
        dry_run: bool,
        progress: ProgressCallback | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.conn = conn
        self.lease = lease
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
        self._open()
        if not self.dry_run:
            for (table,) in self.conn.execute(q["never_analyzed"]).fetchall():
                logger.info("analyzing %s (it has no statistics yet)", table)
                self.conn.execute(sql.SQL("ANALYZE public.{}").format(sql.Identifier(table)))
            row = self.conn.execute(q["executions_size"]).fetchone()
            self.rows_at_analyze = int(row[0]) if row else 0
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
                    self.lease.fenced("set_phase", {**self.lease.params(), "phase": "orphans"})
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
            self.lease.fenced("finish_run", self.lease.params())
        self.summary.complete = True
        logger.info(
            "backfill complete: %d region results examined, %d executions rows changed",
            self.summary.examined,
            self.summary.changed,
        )

    def _open(self) -> None:
        """Take the lease: on an unfinished run of the same scope, resumed, or on a new one.
        A dry run takes no lease and records no run, but is refused while a run holds it."""
        if self.dry_run:
            self.lease.check_free()
            row = self.conn.execute(_queries()["high_water_mark"], self.scope).fetchone()
            self.high_water_mark = row[0] if row else None
            return
        resumed, row = self.lease.take(self.scope)
        (run_id, hwm, cursor, phase, batches, *counts) = row
        self.summary.run_id, self.summary.resumed = int(run_id), resumed
        self.high_water_mark = hwm
        if not resumed:
            return
        self.cursor = cursor or NIL_UUID
        self.phase = str(phase)
        self.summary.batches = int(batches)
        for name, value in zip(("examined", *COUNTS, "max_batch_rows"), counts, strict=True):
            setattr(self.summary, name, int(value))
        logger.info("resuming backfill run %s from %s (%s)", run_id, self.cursor, self.phase)

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
                _queries()["stop_run"], {**self.lease.params(), "status": status, "error": error}
            )
        except psycopg.Error:
            logger.warning("could not record the backfill run as %s", status)

    def _pause(self) -> None:
        """Sleep between batches, waking early when asked to stop: a long pause must not hold
        up Ctrl-C."""
        if not self.sleep:
            return
        deadline = time.monotonic() + self.sleep
        while not self.should_stop():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, PAUSE_POLL_SECONDS))

    def _batch(self, query: str) -> int:
        """Run one batch in its own transaction, with retries; return the ids it examined."""
        attempt = 0
        while True:
            attempt += 1
            if not self.dry_run:
                self.lease.renew()
            try:
                return self._batch_once(query, last_attempt=attempt >= MAX_ATTEMPTS)
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

    def _batch_once(self, query: str, *, last_attempt: bool = False) -> int:
        q = _queries()
        with self.conn.transaction():
            self.conn.execute(
                q["batch_timeouts"],
                {"lock_timeout": self.lock_timeout, "statement_timeout": STATEMENT_TIMEOUT},
            )
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
            if counts["deferred"] and not last_attempt:
                raise _BatchBusy  # rolls the batch back
            batch_rows = (
                counts["inserted"] + counts["updated"] + counts["deleted"] + counts["detached"]
            )
            if not self.dry_run:
                self.lease.fenced(
                    "save_progress",
                    {
                        **self.lease.params(),
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
        """ANALYZE executions and the mirror state once the backfill has written ANALYZE_GROWTH
        times more rows to them than they held at their last ANALYZE (and at least
        ANALYZE_AFTER_ROWS).

        The mirror functions cache one plan per statement for the session (see
        region_results_mirror_plan), built from the statistics of the moment: a plan built while
        executions was nearly empty reads it through whole-index scans, and a backfill is what
        fills it, so each batch would cost more than the last. New statistics invalidate the
        cached plans (PostgreSQL manual, "Plan Caching" under PREPARE); autovacuum would get
        there too, later. A plan needs the tables' order of magnitude, not their exact size:
        growing ANALYZE_GROWTH-fold between two ANALYZEs keeps them to a few per backfill (3 for
        180k rows from empty; each costs about 0.2 s).
        """
        self.rows_since_analyze += batch_rows
        threshold = max(ANALYZE_AFTER_ROWS, ANALYZE_GROWTH * self.rows_at_analyze)
        if self.dry_run or self.rows_since_analyze < threshold:
            return
        logger.info(
            "analyzing executions and the mirror state (%d rows written)", self.rows_since_analyze
        )
        self.conn.execute(_queries()["analyze_mirrored"])
        self.rows_at_analyze += self.rows_since_analyze
        self.rows_since_analyze = 0


def last_runs(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Return the last completed run and the newest unfinished one (for ``beaconsql status``).

    The unfinished run's ``status`` is 'running' only while it holds the lease; a run recorded
    'running' whose lease lapsed (its process was killed, or a second Ctrl-C ended it before it
    could say so) is reported 'interrupted': a rerun resumes it.
    """
    row = conn.execute(_queries()["last_runs"]).fetchone()
    done, unfinished = (row[0], row[1]) if row else (None, None)
    if unfinished is not None and unfinished["status"] == "running":
        holder = lease_holder(conn)
        if holder is None or holder.run_id != unfinished["id"] or holder.lapsed:
            unfinished["status"] = "interrupted"
    return {"last_completed": done, "unfinished": unfinished}
