"""Alembic, driven from Python: the revisions in ``migrations/`` and where a database stands.

``beaconsql upgrade`` is :func:`upgrade`; ``alembic upgrade head`` (with the repository's
``alembic.ini``) runs the same ``env.py``. Both take the DSN from beaconsql's own resolution
(:mod:`beaconsql.db`), or ``-x dsn=…`` on the alembic command line.

Every revision runs with ``lock_timeout`` = :data:`LOCK_TIMEOUT` and is retried at most
:data:`LOCK_ATTEMPTS` times when it cannot get a lock in time; then it fails with a
:class:`MigrationError` naming the statement that waited and the sessions it waited for.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from beaconsql.errors import DatabaseUnavailableError, MigrationError, NotMigratedError
from beaconsql.sqlfiles import resource_dir

logger = logging.getLogger(__name__)

LOCK_TIMEOUT = "5s"
LOCK_ATTEMPTS = 3


def alembic_config(dsn: str | None = None) -> Config:
    """Return an Alembic configuration for this installation's ``migrations/`` folder.

    *dsn*, when given, is handed to ``env.py`` (``config.attributes["dsn"]``).
    """
    config = Config()
    config.set_main_option("script_location", str(resource_dir("migrations")))
    if dsn is not None:
        config.attributes["dsn"] = dsn
    return config


def head_revision() -> str:
    """Return the newest revision id (there is exactly one head)."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise MigrationError(f"migrations/ has {len(heads)} heads ({heads}); expected one.")
    return str(heads[0])


def current_revision(conn: psycopg.Connection[Any]) -> str | None:
    """Return the revision *conn*'s database is at, or None when beaconsql never ran there."""
    exists = conn.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute("SELECT version_num FROM public.alembic_version LIMIT 1").fetchone()
    return None if row is None else str(row[0])


def require_direct(conn: psycopg.Connection[Any]) -> None:
    """Raise :class:`MigrationError` when *conn* goes through a connection pooler.

    Revisions need a session of their own: ``CREATE INDEX CONCURRENTLY`` cannot run in a
    transaction, so its ``lock_timeout`` must be a session setting, which a transaction pooler
    would neither keep for the next statement nor keep from its next client.
    """
    from beaconsql import db

    if db.behind_pooler(conn):
        raise MigrationError(
            "the DSN goes through a connection pooler (the server session answering is not "
            "the one this connection opened): migrations need a direct connection, since "
            "CREATE INDEX CONCURRENTLY runs outside a transaction and its lock_timeout must "
            "hold for the whole session. Nothing was changed. Next step: rerun with --dsn (or "
            "BEACONSQL_DATABASE_URL) naming the PostgreSQL server itself (its host and port, "
            "not the pooler's); the other commands work through the pooler."
        )


def require_head(conn: psycopg.Connection[Any]) -> None:
    """Raise :class:`NotMigratedError` unless *conn*'s database is at the head revision."""
    current = current_revision(conn)
    head = head_revision()
    if current != head:
        where = "never migrated" if current is None else f"at revision {current}"
        raise NotMigratedError(
            f"the database is {where}; beaconsql needs revision {head}. "
            "Run `beaconsql upgrade` (or `alembic upgrade head`) first."
        )


@dataclass(frozen=True)
class UpgradeResult:
    """Where :func:`upgrade` found the database and where it left it."""

    before: str | None
    after: str | None


def upgrade(dsn: str | None, revision: str = "head", *, sql: bool = False) -> UpgradeResult | str:
    """Upgrade the database at *dsn* to *revision* (``alembic upgrade``).

    With ``sql=True`` nothing is executed (*dsn* may be None): the offline script is returned
    as text; *revision* may then be a range, ``"0001:0002"``.
    Raises :class:`MigrationError` when a revision fails (adoption refused, lock timeout).
    """
    return _run(command.upgrade, dsn, revision, sql=sql)


def downgrade(dsn: str | None, revision: str, *, sql: bool = False) -> UpgradeResult | str:
    """Downgrade the database at *dsn* to *revision* (``alembic downgrade``)."""
    return _run(command.downgrade, dsn, revision, sql=sql)


def _run(
    action: Callable[..., None], dsn: str | None, revision: str, *, sql: bool
) -> UpgradeResult | str:
    config = alembic_config(dsn)
    if sql:
        buffer = io.StringIO()
        config.output_buffer = buffer
        action(config, revision, sql=True)
        return buffer.getvalue()
    if dsn is None:
        raise MigrationError("a database is needed to migrate online (or pass sql=True)")
    from beaconsql import db

    with db.connect(dsn, autocommit=True) as conn:
        require_direct(conn)
        before = current_revision(conn)
    try:
        # Alembic prints nothing to stdout online; keep it that way for --json users.
        with redirect_stdout(io.StringIO()):
            action(config, revision)
    except (MigrationError, DatabaseUnavailableError):
        raise
    except Exception as exc:
        cause = getattr(exc, "orig", None) or exc
        if is_connection_failure(cause):
            raise DatabaseUnavailableError(
                db.redact_text(
                    f"lost the connection to {db.redact_dsn(dsn)} while migrating "
                    f"({_first_line(cause)}). Rerun the command once the server is back: "
                    "every revision is safe to rerun.",
                    dsn,
                )
            ) from None
        raise MigrationError(db.redact_text(f"migration failed: {describe(cause)}", dsn)) from exc
    with db.connect(dsn, autocommit=True) as conn:
        after = current_revision(conn)
    return UpgradeResult(before=before, after=after)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_connection_failure(exc: BaseException) -> bool:
    """Tell whether *exc* means the connection was lost or refused (not a SQL error)."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def describe(exc: BaseException) -> str:
    """Return PostgreSQL's message with its DETAIL (which names dependent objects) and HINT,
    or the exception text. A hint to use CASCADE is left out: beaconsql never cascades."""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        text = exc.diag.message_primary
        if exc.diag.message_detail:
            text += f" ({exc.diag.message_detail.strip()})"
        hint = exc.diag.message_hint
        if hint and "CASCADE" not in hint:
            text += f" (hint: {hint})"
        return text
    return _first_line(exc)
