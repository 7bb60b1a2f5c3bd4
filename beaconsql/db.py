"""Where the database is, how to reach it, and how to name it without leaking a password.

This is the one module that reads the environment. Resolution order for the DSN:
``--dsn`` (passed in) > ``BEACONSQL_DATABASE_URL`` > ``DATABASE_URL``. Only ``beaconsql demo``
falls back to the embedded server when none is set (see :mod:`beaconsql.embedded`).

Connection poolers (PgBouncer in transaction mode, as managed services run it) hand each
transaction to any server session: beaconsql keeps no session state across transactions, and
uses no server-side prepared statements through one (:func:`adapt_to_pooler`).
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs
import psycopg
from psycopg import conninfo

from beaconsql.errors import (
    BeaconsqlError,
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidArgumentError,
)

DSN_VARIABLES = ("BEACONSQL_DATABASE_URL", "DATABASE_URL")
DATA_DIR_VARIABLE = "BEACONSQL_DATA_DIR"
APPLICATION_NAME = "beaconsql"

_HOW_TO_SET = (
    "Set one with --dsn, or the environment variable BEACONSQL_DATABASE_URL (or DATABASE_URL), "
    "e.g. postgresql://postgres@127.0.0.1:5432/postgres; `beaconsql demo` needs none."
)


def resolve_dsn(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    """Return the DSN to use: *explicit*, else ``BEACONSQL_DATABASE_URL``, else ``DATABASE_URL``.

    Raises :class:`ConfigurationError` (exit 1) when none is set, saying how to set one.
    """
    found = find_dsn(explicit, environ)
    if found is None:
        raise ConfigurationError(f"no database configured. {_HOW_TO_SET}")
    return found


def find_dsn(
    explicit: str | None, environ: Mapping[str, str] | None = None, *, option: str = "--dsn"
) -> str | None:
    """Return the configured DSN, or None when nothing is configured.

    Raises :class:`InvalidArgumentError` (exit 2, naming *option*) when *explicit* is not a
    connection string libpq can read (or its port is not a number), :class:`ConfigurationError`
    (exit 1) when the environment variable's value is not: before any connection is tried, and
    without echoing the value (it may hold a password).
    """
    if explicit:
        return _readable(explicit, option, InvalidArgumentError)
    env = os.environ if environ is None else environ
    for name in DSN_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return _readable(value, name, ConfigurationError)
    return None


def _readable(dsn: str, source: str, error: type[BeaconsqlError]) -> str:
    problem: str | None
    try:
        ports = str(conninfo.conninfo_to_dict(dsn).get("port") or "")
    except psycopg.Error:
        problem = "is not a PostgreSQL connection string"
    else:
        numeric = all(port.isdigit() for port in ports.split(",") if port)
        problem = None if numeric else f"has a port that is not a number ({ports!r})"
    if problem:
        raise error(
            f"{source} {problem}. Give a URI, postgresql://user@host:5432/dbname, "
            "or key=value pairs, host=127.0.0.1 port=5432 dbname=postgres."
        )
    return dsn


def resolve_embedded_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Return the embedded server's data directory.

    ``BEACONSQL_DATA_DIR`` wins. Otherwise the user's data directory
    (``~/.local/share/beaconsql/pgdata`` on Linux); as root, ``/var/lib/beaconsql/pgdata``,
    because the server then runs as an unprivileged user that must be able to reach it and
    a home directory is usually closed to other users.
    """
    env = os.environ if environ is None else environ
    override = env.get(DATA_DIR_VARIABLE, "").strip()
    if override:
        return Path(override).expanduser().resolve()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/beaconsql/pgdata")
    return Path(platformdirs.user_data_dir("beaconsql")) / "pgdata"


def _password_of(dsn: str) -> str | None:
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    if password:
        return str(password)
    # Unparsable DSNs can still carry a password; find it the way a reader would.
    match = re.search(r"://[^:/@\s]*:([^@\s]*)@", dsn) or re.search(r"password\s*=\s*(\S+)", dsn)
    return match.group(1) if match and match.group(1) else None


def redact_dsn(dsn: str) -> str:
    """Return *dsn* as ``postgresql://user@host:port/dbname``, with no password, for messages."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return redact_text("<unparsable DSN>", dsn)
    user = str(parts.get("user") or "")
    host = str(parts.get("host") or "")
    port = parts.get("port")
    dbname = str(parts.get("dbname") or "")
    where = host if not port else f"{host}:{port}"
    if host.startswith("/"):
        where = f"[{host}]" if not port else f"[{host}]:{port}"
    shown = f"postgresql://{user + '@' if user else ''}{where}/{dbname}"
    if parts.get("password"):
        shown += " (password hidden)"
    return shown


def redact_text(text: str, dsn: str | None) -> str:
    """Return *text* with the password of *dsn* (if any) replaced by ``***``."""
    if not dsn:
        return text
    password = _password_of(dsn)
    if password:
        text = text.replace(password, "***")
    return text


def with_dbname(dsn: str, dbname: str) -> str:
    """Return *dsn* pointing at database *dbname* (same server, user, password)."""
    return conninfo.make_conninfo(dsn, dbname=dbname)


def dbname_of(dsn: str) -> str | None:
    """Return the database *dsn* names, or None when it names none (libpq's default then)."""
    name = conninfo.conninfo_to_dict(dsn).get("dbname")
    return None if name is None else str(name)


def without_password(dsn: str) -> tuple[str, bool]:
    """Return *dsn* in key=value form without its password, and whether it had one.

    Unlike :func:`redact_dsn` the result is a DSN libpq reads (a socket directory stays a
    host), for commands printed for the user to run.
    """
    parts = conninfo.conninfo_to_dict(dsn)
    had = parts.pop("password", None) is not None
    first = [k for k in ("host", "port", "user", "dbname") if k in parts]
    ordered = {k: str(parts[k]) for k in [*first, *(k for k in parts if k not in first)]}
    return conninfo.make_conninfo(**ordered), had


def connect(dsn: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection to *dsn*, with no server-side prepared statements.

    psycopg prepares a statement on its fifth execution; a transaction pooler cannot keep it
    (``prepared statement "_pg3_0" does not exist``). beaconsql's own connections serve one
    command each, whose repeated statements (the backfill's and verify's batches) cost the same
    unprepared: prepared statements are off whatever the path (docs/operations.md, "Poolers").

    Raises :class:`DatabaseUnavailableError` naming the server (password hidden) and the next
    step when the server cannot be reached or refuses the connection.
    """
    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            application_name=APPLICATION_NAME,
            connect_timeout=10,
            prepare_threshold=None,
        )
    except psycopg.Error as exc:
        reason = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else "", dsn)
        missing = _MISSING_DATABASE.search(reason)
        if missing:
            name = missing.group(1)
            raise DatabaseUnavailableError(
                f"cannot connect to {redact_dsn(dsn)}: database {name} does not exist on that "
                f"server. Create it (createdb {name}, or CREATE DATABASE; then beaconsql "
                "upgrade), or name an existing database in the DSN; `beaconsql demo` makes its "
                "own again."
            ) from None
        raise DatabaseUnavailableError(
            f"cannot connect to {redact_dsn(dsn)}: {reason}. "
            "Check that the server is running and that the DSN is right."
        ) from None


_POOLED: weakref.WeakKeyDictionary[psycopg.Connection[Any], bool] = weakref.WeakKeyDictionary()


def behind_pooler(conn: psycopg.Connection[Any]) -> bool:
    """Tell whether *conn* reaches PostgreSQL through a connection pooler (cached per connection).

    The signal: the process id the server handed the client at connect time (BackendKeyData,
    ``conn.info.backend_pid``) is that of the session serving it, unless something between
    them answered the connection itself. PgBouncer (and the other poolers) hand clients a key
    of their own, since a client's statements may be served by any of their server sessions;
    ``pg_backend_pid()`` then names another process. Costs one query on first use.
    """
    pooled = _POOLED.get(conn)
    if pooled is None:
        row = conn.execute("SELECT pg_backend_pid()", prepare=False).fetchone()
        pooled = row is None or int(row[0]) != conn.info.backend_pid
        _POOLED[conn] = pooled
    return pooled


def adapt_to_pooler(conn: psycopg.Connection[Any]) -> None:
    """Turn psycopg's automatic prepared statements off on *conn* when it goes through a pooler.

    For connections beaconsql is handed (the writer's, the portal's): direct, a statement
    prepared after five executions saves its planning (the portal read: 4-5x faster);
    through a transaction pooler it fails (``prepared statement "_pg3_0" does not exist``),
    so there ``prepare_threshold`` becomes None, for the caller's own statements too.
    """
    if conn.prepare_threshold is not None and behind_pooler(conn):
        conn.prepare_threshold = None


# libpq's report of the server's refusal (sqlstate 3D000 does not reach the client at connect).
_MISSING_DATABASE = re.compile(r'database "(.+)" does not exist')
