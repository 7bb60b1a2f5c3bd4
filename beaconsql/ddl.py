"""Operations the Alembic revisions in ``migrations/versions`` are built from.

Every revision runs its SQL through :func:`run_sql_file` / :func:`execute_sql`, which hand the
text to the driver untouched (no bind-parameter parsing: ``op.execute`` would read ``:word``
as a parameter, and psycopg rejects a bare ``%`` once parameters are passed). Online the text
goes to the psycopg connection; offline (``alembic upgrade --sql``) it is written out as is,
so both produce byte-identical function bodies and view definitions.

Index builds on ``executions`` and ``region_results`` run ``CONCURRENTLY`` in an autocommit
block (:func:`create_indexes_concurrently`). Online, an index left INVALID by an interrupted
build is dropped and rebuilt; offline that cannot be detected, and ``IF NOT EXISTS`` would
skip such an index: after an interrupted offline run, rerun online (docs/operations.md).
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from alembic import op

from beaconsql.sqlfiles import read_sql

logger = logging.getLogger(__name__)

_INDEX_STATEMENT = re.compile(
    r"^CREATE (?:UNIQUE )?INDEX CONCURRENTLY IF NOT EXISTS (\w+) ON ", re.IGNORECASE
)


def _offline() -> bool:
    return bool(op.get_context().as_sql)


def _driver_connection() -> Any:
    return op.get_bind().connection.driver_connection


def execute_sql(sql: str, *, label: str | None = None) -> None:
    """Execute *sql* (one or more statements) with no parameter parsing, online or offline.

    On failure the exception gets a note naming *label* (or the statement's first line).
    """
    if _offline():
        op.get_context().impl.static_output(sql.strip())
        return
    try:
        _driver_connection().execute(sql)
    except psycopg.Error as exc:
        exc.add_note(f"while running {label or statement_summary(sql)}")
        raise


def statement_summary(sql: str) -> str:
    """Return the first line of *sql* that is not a comment, shortened for messages."""
    for line in sql.splitlines():
        line = line.strip()
        if line and not line.startswith("--"):
            return line if len(line) <= 120 else line[:117] + "..."
    return "(empty statement)"


def run_sql_file(relative_path: str) -> None:
    """Execute ``sql/<relative_path>`` as it is (see :func:`execute_sql`)."""
    logger.info("running sql/%s", relative_path)
    execute_sql(read_sql(relative_path), label=f"sql/{relative_path}")


@dataclass(frozen=True)
class ManifestFile:
    """One file of a manifest: its path under ``sql/`` and how a downgrade undoes it."""

    path: str
    drop: tuple[str, ...] = ()
    down: str | None = None
    concurrently: bool = False


def read_manifest(relative_path: str) -> list[ManifestFile]:
    """Return the files of the manifest ``sql/<relative_path>`` (TOML, ``[[file]]`` tables), in
    load order; paths are made relative to ``sql/``."""
    folder = relative_path.rsplit("/", 1)[0] + "/" if "/" in relative_path else ""
    entries = tomllib.loads(read_sql(relative_path))["file"]
    return [
        ManifestFile(
            path=folder + entry["path"],
            drop=tuple(entry.get("drop", ())),
            down=folder + entry["down"] if "down" in entry else None,
            concurrently=bool(entry.get("concurrently", False)),
        )
        for entry in entries
    ]


def apply_manifest(relative_path: str) -> None:
    """Run every file of the manifest, in order (CONCURRENTLY files outside any transaction)."""
    for entry in read_manifest(relative_path):
        if entry.concurrently:
            create_indexes_concurrently(entry.path)
        else:
            run_sql_file(entry.path)


def undo_manifest(relative_path: str) -> None:
    """Undo every file of the manifest, in reverse order: its ``down`` file, else a ``DROP …
    IF EXISTS`` of each object it names (never CASCADE: a dependent object of someone else's
    stops the downgrade, named by PostgreSQL); the indexes of a ``concurrently`` file are
    dropped CONCURRENTLY."""
    for entry in reversed(read_manifest(relative_path)):
        if entry.down:
            run_sql_file(entry.down)
        if entry.concurrently:
            if entry.drop:
                drop_indexes_concurrently([o.removeprefix("INDEX public.") for o in entry.drop])
            continue
        for obj in entry.drop:
            kind, _, rest = obj.partition(" ")
            execute_sql(f"DROP {kind} IF EXISTS {rest};")


def index_statements(relative_path: str) -> list[tuple[str, str]]:
    """Return ``(index name, statement)`` for each ``CREATE INDEX CONCURRENTLY`` line of a file."""
    found = []
    for line in read_sql(relative_path).splitlines():
        match = _INDEX_STATEMENT.match(line.strip())
        if match:
            found.append((match.group(1), line.strip()))
    if not found:
        raise ValueError(f"sql/{relative_path} holds no CREATE INDEX CONCURRENTLY statement")
    return found


def create_indexes_concurrently(relative_path: str, *, record_in: str | None = None) -> None:
    """Build each index of ``sql/<relative_path>`` CONCURRENTLY, outside any transaction.

    *record_in* names a table (``beaconsql_baseline_objects``) in which an index that did not
    exist yet is recorded as created, before it is built, so that the downgrade drops only
    indexes the revision made. Online, an INVALID index of the same name (left by an
    interrupted build) is dropped first and rebuilt.
    """
    with op.get_context().autocommit_block():
        for name, statement in index_statements(relative_path):
            if record_in:
                execute_sql(
                    f"INSERT INTO public.{record_in} (object_type, object_name) "
                    f"SELECT 'index', '{name}' WHERE to_regclass('public.{name}') IS NULL "
                    "ON CONFLICT DO NOTHING;"
                )
            if not _offline() and _index_is_invalid(name):
                logger.warning("index %s is INVALID (interrupted build): rebuilding it", name)
                execute_sql(f"DROP INDEX CONCURRENTLY IF EXISTS public.{name};")
            execute_sql(statement)


def drop_indexes_concurrently(names: list[str]) -> None:
    """Drop each named index CONCURRENTLY, outside any transaction, if it exists."""
    with op.get_context().autocommit_block():
        for name in names:
            execute_sql(f"DROP INDEX CONCURRENTLY IF EXISTS public.{name};")


def _index_is_invalid(name: str) -> bool:
    row = (
        _driver_connection()
        .execute(
            "SELECT NOT i.indisvalid FROM pg_catalog.pg_index i "
            "WHERE i.indexrelid = to_regclass(%s)",
            (f"public.{name}",),
        )
        .fetchone()
    )
    return bool(row and cast(tuple[bool], row)[0])
