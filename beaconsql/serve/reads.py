"""How `beaconsql serve` reads: a connection pool, one read-only transaction per request with
its own ``statement_timeout``, one retry, and answers shared among requests for one thing.

Every failure leaves here as a :class:`~beaconsql.errors.BeaconsqlError` the app maps to a
status (:mod:`beaconsql.serve.app`), or as the original exception (a 500 there): the
database's message, the DSN and the traceback are logged (password redacted), never returned.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import IsolationLevel
from psycopg_pool import ConnectionPool, PoolTimeout

from beaconsql import db, migration
from beaconsql.errors import DatabaseUnavailableError
from beaconsql.sqlfiles import named_queries

logger = logging.getLogger(__name__)

T = TypeVar("T")
APPLICATION_NAME = "beaconsql-serve"
# A standby cancels a query whose snapshot needs rows that replay removes (SQLSTATE 40001,
# "conflict with recovery"), or that holds a lock replay needs (40P01): worth one retry.
RETRIED_STATES = ("40001", "40P01")
STATEMENT_TIMEOUT_STATE = "57014"


def _queries() -> dict[str, str]:
    return named_queries("queries/serve.sql")


class DatabaseBusyError(DatabaseUnavailableError):
    """The database cancelled the read (a recovery conflict twice, or the statement_timeout)."""


class Reader:
    """A pool of read-only connections to one server, and the transaction each read runs in.

    *statement_timeout_ms* bounds every statement of a request (``SET LOCAL`` in its
    transaction). *wait* is how long a request waits for a connection before it is answered
    503; *reconnect* how long the pool retries a lost server before it gives up that attempt
    (the next request starts another, so the pool recovers without a restart of serve).
    """

    def __init__(
        self,
        dsn: str,
        *,
        name: str,
        min_size: int = 1,
        max_size: int = 10,
        statement_timeout_ms: int = 5000,
        wait: float = 3.0,
        reconnect: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.name = name
        self.statement_timeout_ms = statement_timeout_ms
        self.attempts = 0  # reads started, retries included (for tests and metrics)
        self.pool = ConnectionPool(
            dsn,
            name=name,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=wait,
            reconnect_timeout=reconnect,
            check=ConnectionPool.check_connection,
            configure=self._configure,
            kwargs={"application_name": APPLICATION_NAME, "connect_timeout": 5},
        )

    @staticmethod
    def _configure(conn: psycopg.Connection[Any]) -> None:
        # Every read is one REPEATABLE READ READ ONLY transaction: the statements of a request
        # (progress reads three) see one snapshot, and nothing can write through serve.
        conn.autocommit = True
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True

    def open(self) -> None:
        """Open the pool without waiting for the server: reads answer 503 until it is up."""
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close()

    def read(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run *fn* in a read-only transaction and return its result.

        A lost connection or a query a standby cancelled for a recovery conflict is retried
        once. Raises DatabaseUnavailableError when the server cannot be reached, DatabaseBusyError
        when it cancelled the read; any other error propagates (logged by the app).
        """
        for attempt in (1, 2):
            self.attempts += 1
            try:
                with self.pool.connection() as conn, conn.transaction():
                    conn.execute(
                        _queries()["statement_timeout"],
                        {"milliseconds": str(self.statement_timeout_ms)},
                    )
                    return fn(conn)
            except PoolTimeout:
                logger.warning("%s: no connection to %s", self.name, db.redact_dsn(self.dsn))
                raise DatabaseUnavailableError("the database is unavailable") from None
            except psycopg.Error as exc:
                state = exc.sqlstate
                retry = state in RETRIED_STATES or migration.is_connection_failure(exc)
                logger.warning(
                    "%s: read %s on attempt %d: %s",
                    self.name,
                    "cancelled" if state in RETRIED_STATES else "failed",
                    attempt,
                    db.redact_text(migration.describe(exc), self.dsn),
                )
                if retry and attempt == 1:
                    continue
                if state in RETRIED_STATES:
                    raise DatabaseBusyError("the database cancelled the read; retry") from None
                if state == STATEMENT_TIMEOUT_STATE:
                    raise DatabaseBusyError("the database did not answer in time") from None
                if migration.is_connection_failure(exc):
                    raise DatabaseUnavailableError("the database is unavailable") from None
                raise
        raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class Answer:
    """A read's encoded answer, when it was read, and its entity tag."""

    body: bytes
    at: float
    etag: str = field(init=False)

    def __post_init__(self) -> None:
        self.etag = '"' + hashlib.blake2b(self.body, digest_size=12).hexdigest() + '"'


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: Answer | None = None
        self.error: BaseException | None = None


class SharedReads:
    """Share a read's answer among the requests for the same thing for *ttl* seconds.

    Requests arriving while the read is in flight wait for it rather than start their own
    (one read per key at a time), so N clients polling one job cost one read per *ttl*. A
    failed read is not kept: the waiting requests get its error, the next request reads again.
    *ttl* 0 shares nothing.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.reads = 0  # reads actually made (for tests and the benchmark)
        self._lock = threading.Lock()
        self._answers: dict[Hashable, Answer] = {}
        self._flights: dict[Hashable, _Flight] = {}

    def fresh(self, key: Hashable) -> Answer | None:
        """Return the answer shared for *key* if it is still fresh, without reading."""
        if self.ttl <= 0:
            return None
        with self._lock:
            answer = self._answers.get(key)
        if answer is not None and time.monotonic() - answer.at < self.ttl:
            return answer
        return None

    def get(self, key: Hashable, load: Callable[[], bytes]) -> Answer:
        """Return the answer for *key*, reading it with *load* unless a fresh one is shared."""
        if self.ttl <= 0:
            self.reads += 1
            return Answer(load(), time.monotonic())
        with self._lock:
            now = time.monotonic()
            answer = self._answers.get(key)
            if answer is not None and now - answer.at < self.ttl:
                return answer
            flight = self._flights.get(key)
            owner = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not owner:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            assert flight.answer is not None
            return flight.answer
        try:
            self.reads += 1
            flight.answer = Answer(load(), time.monotonic())
            return flight.answer
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
                if flight.answer is not None:
                    self._answers[key] = flight.answer
                    if len(self._answers) > self.MAX_ENTRIES:
                        self._prune(time.monotonic())
            flight.done.set()

    def _prune(self, now: float) -> None:
        for key in [k for k, a in self._answers.items() if now - a.at >= self.ttl]:
            del self._answers[key]
