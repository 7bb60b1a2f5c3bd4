"""Where the database is, how to reach it, and how to name it without leaking a password.

This is the one module that reads the environment. Resolution order for the DSN:
``--dsn`` (passed in) > ``BEACONSQL_DATABASE_URL`` > ``DATABASE_URL``. Only ``beaconsql demo``
falls back to the embedded server when none is set (see :mod:`beaconsql.embedded`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

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


def connect(dsn: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection to *dsn*.

    Raises :class:`DatabaseUnavailableError` naming the server (password hidden) and the next
    step when the server cannot be reached or refuses the connection.
    """
    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            application_name=APPLICATION_NAME,
            connect_timeout=10,
        )
    except psycopg.Error as exc:
        reason = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else "", dsn)
        raise DatabaseUnavailableError(
            f"cannot connect to {redact_dsn(dsn)}: {reason}. "
            "Check that the server is running and that the DSN is right."
        ) from None
