"""Alembic environment for beaconsql's revisions.

The DSN comes from ``-x dsn=…``, else the one :func:`beaconsql.migration.upgrade` passes, else
beaconsql's own resolution (``BEACONSQL_DATABASE_URL``, then ``DATABASE_URL``). Offline mode
(``--sql``) needs none. A connection through a pooler is refused (revisions need a session of
their own). Run by the ``alembic`` command, a failure ends the process with one ``FAILED: …``
line and the next step, as ``beaconsql`` does (``--raiseerr`` shows the traceback);
beaconsql's own callers get the exception.

Each revision runs in its own transaction with ``lock_timeout`` set; one that cannot get a
lock in time is retried (at most LOCK_ATTEMPTS tries in all), then the run fails naming the
statement and the sessions it waited for. Autogenerate is not used:
the runner's tables are not modelled here, and autogenerate would propose dropping them.
"""

from __future__ import annotations

import logging
import random
import time
from logging.config import fileConfig
from typing import Any

import psycopg
from alembic import context
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from beaconsql import db, migration
from beaconsql.errors import BeaconsqlError, MigrationError
from beaconsql.migration import LOCK_ATTEMPTS, LOCK_TIMEOUT, require_direct

config = context.config
if config.config_file_name:  # the alembic CLI; beaconsql's own callers configure logging
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("beaconsql.migration")

# Lock waits are bounded; statements are not: a CONCURRENTLY build on a large table must not be
# cut off by a role's or server's statement_timeout (it would leave an INVALID index).
LOCK_SETTING = f"SET lock_timeout = '{LOCK_TIMEOUT}'; SET statement_timeout = 0;"


def _dsn() -> str:
    from_x = context.get_x_argument(as_dictionary=True).get("dsn")
    return db.resolve_dsn(from_x or config.attributes.get("dsn"))


def run_migrations_offline() -> None:
    context.configure(
        dialect_name="postgresql",
        transaction_per_migration=True,
        literal_binds=True,
    )
    context.get_context().impl.static_output(
        "-- beaconsql migration script. Apply with: psql -v ON_ERROR_STOP=1 -f <this file>\n"
        "-- Offline mode cannot detect an INVALID index left by an interrupted CONCURRENTLY\n"
        "-- build; after an interrupted run, rerun online (beaconsql upgrade).\n"
        "-- squawk: varchar columns here are the runner's own definitions (and alembic's version\n"
        "-- table); beaconsql's own columns are text. alembic creates its version table without\n"
        "-- IF NOT EXISTS; every statement of beaconsql's own is safe to rerun.\n"
        "-- squawk-ignore-file prefer-text-field, prefer-robust-stmts\n" + LOCK_SETTING
    )
    with context.begin_transaction():
        context.run_migrations()


def _log_notice(diag: psycopg.errors.Diagnostic) -> None:
    level = logging.WARNING if diag.severity_nonlocalized == "WARNING" else logging.INFO
    message = diag.message_primary or ""
    # "relation … already exists, skipping" (duplicate_table, duplicate_column, duplicate_object)
    # is how an idempotent statement meets an object it adopts: dozens on a runner's database.
    if diag.sqlstate in ("42P07", "42701", "42710") or message.endswith(", skipping"):
        level = logging.DEBUG
    if diag.message_hint:
        message += f" ({diag.message_hint})"
    logger.log(level, "%s", message)


def _lock_holders(dsn: str) -> str:
    """Describe the other sessions holding locks on relations of the public schema."""
    try:
        with db.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                """
                SELECT DISTINCT a.pid, l.relation::regclass::text, l.mode, a.state,
                       date_trunc('second', now() - a.xact_start)::text
                FROM pg_catalog.pg_locks l
                JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
                WHERE l.granted AND l.pid <> pg_backend_pid()
                  AND l.database = (SELECT oid FROM pg_catalog.pg_database
                                    WHERE datname = current_database())
                  AND l.relation IN (SELECT oid FROM pg_catalog.pg_class
                                     WHERE relnamespace = 'public'::regnamespace)
                ORDER BY 1
                """
            ).fetchall()
    except Exception:  # the description is a courtesy; never hide the real failure
        return "could not list them"
    if not rows:
        return "none left by now"
    return "; ".join(
        f"pid {pid} holds {mode} on {rel} ({state}, transaction open {age})"
        for pid, rel, mode, state, age in rows
    )


def _lock_timeout_of(exc: BaseException) -> psycopg.errors.LockNotAvailable | None:
    cause: Any = getattr(exc, "orig", None) or exc
    return cause if isinstance(cause, psycopg.errors.LockNotAvailable) else None


def run_migrations_with(connection: Any) -> None:
    """Run on a connection the caller owns (pytest-alembic, the cookbook's shared connection).

    Revisions build indexes CONCURRENTLY, which cannot run inside a caller's transaction: an
    open one (e.g. from reading the current revision) is committed first.
    """
    if connection.in_transaction():
        connection.commit()
    require_direct(connection.connection.driver_connection)
    connection.exec_driver_sql(LOCK_SETTING)
    connection.commit()
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Engine):
        with given.connect() as connection:
            run_migrations_with(connection)
        return
    if given is not None:
        run_migrations_with(given)
        return
    dsn = _dsn()
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: db.connect(dsn), poolclass=NullPool
    )
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        with engine.connect() as connection:
            driver = connection.connection.driver_connection
            driver.add_notice_handler(_log_notice)
            require_direct(driver)
            driver.execute(LOCK_SETTING)
            context.configure(connection=connection, transaction_per_migration=True)
            try:
                with context.begin_transaction():
                    context.run_migrations()
                return
            except Exception as exc:
                timeout = _lock_timeout_of(exc)
                if timeout is None:
                    raise
                notes = " ".join(getattr(timeout, "__notes__", []))
                if attempt == LOCK_ATTEMPTS:
                    raise MigrationError(
                        f"gave up after {LOCK_ATTEMPTS} attempts: a lock was not granted within "
                        f"lock_timeout={LOCK_TIMEOUT} {notes}. Sessions holding locks on tables of "
                        f"the public schema: {_lock_holders(dsn)}. Next step: let those "
                        "transactions finish (or end them), then rerun; every revision is "
                        "safe to rerun."
                    ) from None
                pause = attempt + random.random()
                logger.warning(
                    "lock not granted within %s %s; retrying in %.1fs (attempt %d of %d)",
                    LOCK_TIMEOUT,
                    notes,
                    pause,
                    attempt + 1,
                    LOCK_ATTEMPTS,
                )
        time.sleep(pause)


def _given_dsn() -> str | None:
    """The DSN in use, if it can be told, to keep its password out of a failure message."""
    try:
        from_x = context.get_x_argument(as_dictionary=True).get("dsn")
        return db.find_dsn(from_x or config.attributes.get("dsn"))
    except BeaconsqlError:
        return None


def main() -> None:
    try:
        if context.is_offline_mode():
            run_migrations_offline()
        else:
            run_migrations_online()
    except Exception as exc:
        from_alembic_cli = config.cmd_opts is not None
        if not from_alembic_cli or getattr(config.cmd_opts, "raiseerr", False):
            raise
        # One line with the next step, no traceback: SystemExit prints it and exits 1.
        raise SystemExit(f"FAILED: {migration.failure(exc, _given_dsn())}") from None


main()
