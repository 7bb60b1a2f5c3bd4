"""Least-privilege roles for the portal and the writer (``beaconsql grant``; SPEC "Roles").

- the portal role (default ``beacon_portal``) may SELECT ``executions_unified`` and ``jobs``,
  nothing else: the view reads the runner's tables with its owner's rights, and the functions
  it calls read no table; it may also EXECUTE the owner-rights functions ``beaconsql serve``
  reads ``/healthz``, ``/metrics`` and a job's existence through (PUBLIC may not);
- the writer role (default ``beacon_writer``) may read and write the runner's tables, use their
  sequences, and nothing more: no DDL, no write to the mirror's own tables (its triggers write
  them with their owner's rights), and on ``executions`` no write to the mirror's columns (the
  link and the evidence level), so that it cannot forge a mirrored row.

Where PUBLIC may still create objects in schema ``public`` (PostgreSQL's default before 15,
kept by databases upgraded since), any role could plant a function there; :func:`grant` says
so, and revokes it when asked.

Roles are cluster-wide, so no revision creates or drops them; this creates each one if absent
(NOLOGIN: grant it to the application's login role, or ALTER ROLE … LOGIN PASSWORD …) and
grants in the current database only. Running it again, or in another database of the same
cluster, is safe.
"""

from __future__ import annotations

import re
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from beaconsql import migration
from beaconsql.errors import InvalidArgumentError

PORTAL_ROLE = "beacon_portal"
WRITER_ROLE = "beacon_writer"
PORTAL_RELATIONS = ("executions_unified", "jobs")
# The owner-rights functions of `beaconsql serve` (sql/serve/serve_functions.v1.sql): name and
# argument types.
PORTAL_FUNCTIONS: tuple[tuple[str, LiteralString], ...] = (
    ("serve_health", ""),
    ("serve_metrics", ""),
    ("serve_job_known", "text"),
)
# The runner's tables (runner-app.md section 1.2) that exist in a given database are granted;
# the first six are always there once beaconsql's baseline ran.
RUNNER_TABLES = (
    "jobs",
    "executions",
    "cross_region_executions",
    "region_results",
    "cross_region_analyses",
    "transparency_log",
    "diffs",
    "outbox",
    "ipfs_bundles",
    "idempotency_keys",
    "trace_spans",
)
WRITER_VIEWS = ("executions_unified",)
# The columns of executions only the mirror writes (sql/mirror/apply/tables.v1.sql).
MIRROR_COLUMNS = ("mirror_region_result_id", "mirror_evidence")
_ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def _check_role_name(name: str) -> str:
    if not _ROLE_NAME.match(name):
        raise InvalidArgumentError(
            f"role name {name!r} is not a plain identifier (letters, digits, _, at most 63)"
        )
    return name


def _existing(conn: psycopg.Connection[Any], names: tuple[str, ...]) -> list[str]:
    rows = conn.execute(
        "SELECT relname FROM pg_catalog.pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relname = ANY(%s) ORDER BY relname",
        (list(names),),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _sequences(conn: psycopg.Connection[Any], tables: list[str]) -> list[str]:
    """Sequences the writer's inserts draw from: those owned by its tables, and the
    transparency log's index sequence (its BEFORE INSERT trigger calls nextval)."""
    rows = conn.execute(
        """
        SELECT DISTINCT s.relname
        FROM pg_catalog.pg_class s
        JOIN pg_catalog.pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i')
        JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
        WHERE s.relkind = 'S' AND t.relnamespace = 'public'::regnamespace
          AND t.relname = ANY(%s)
        UNION
        SELECT relname FROM pg_catalog.pg_class
        WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace
          AND relname = 'transparency_log_index_seq'
        ORDER BY 1
        """,
        (tables,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _writable_columns(conn: psycopg.Connection[Any]) -> list[str]:
    """executions' columns but the mirror's own, in column order."""
    rows = conn.execute(
        "SELECT attname FROM pg_catalog.pg_attribute "
        "WHERE attrelid = 'public.executions'::regclass AND attnum > 0 AND NOT attisdropped "
        "AND NOT attname = ANY(%s) ORDER BY attnum",
        (list(MIRROR_COLUMNS),),
    ).fetchall()
    return [str(r[0]) for r in rows]


def public_may_create(conn: psycopg.Connection[Any]) -> bool:
    """Whether PUBLIC may create objects in schema public of *conn*'s database."""
    row = conn.execute("SELECT has_schema_privilege('public', 'public', 'CREATE')").fetchone()
    return bool(row and row[0])


def _names(names: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier("public", n) for n in names)


def grant_statements(
    conn: psycopg.Connection[Any],
    *,
    portal_role: str = PORTAL_ROLE,
    writer_role: str = WRITER_ROLE,
    revoke_public_create: bool = False,
) -> list[sql.Composed]:
    """Return the statements :func:`grant` runs, in order (for ``--dry-run``)."""
    portal, writer = _check_role_name(portal_role), _check_role_name(writer_role)
    if portal == writer:
        raise InvalidArgumentError("the portal and writer roles must differ")
    migration.require_head(conn)
    statements: list[sql.Composed] = []
    existing_roles = {
        str(r[0])
        for r in conn.execute(
            "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)", ([portal, writer],)
        )
    }
    for role in (portal, writer):
        if role not in existing_roles:
            statements.append(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    p, w = sql.Identifier(portal), sql.Identifier(writer)
    statements += [
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(p),
        sql.SQL("GRANT SELECT ON {} TO {}").format(_names(list(PORTAL_RELATIONS)), p),
        sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
            sql.SQL(", ").join(
                sql.SQL("{}({})").format(sql.Identifier("public", name), sql.SQL(args))
                for name, args in PORTAL_FUNCTIONS
            ),
            p,
        ),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(w),
    ]
    tables = _existing(conn, RUNNER_TABLES)
    others = [t for t in tables if t != "executions"]
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in _writable_columns(conn))
    statements += [
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(_names(others), w),
        sql.SQL("GRANT SELECT, DELETE ON {} TO {}").format(_names(["executions"]), w),
        sql.SQL("GRANT INSERT ({cols}), UPDATE ({cols}) ON {t} TO {w}").format(
            cols=columns, t=sql.Identifier("public", "executions"), w=w
        ),
        sql.SQL("GRANT SELECT ON {} TO {}").format(_names(list(WRITER_VIEWS)), w),
    ]
    sequences = _sequences(conn, tables)
    if sequences:
        statements.append(
            sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(_names(sequences), w)
        )
    if revoke_public_create and public_may_create(conn):
        statements.append(sql.Composed([sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC")]))
    return statements


def grant(
    conn: psycopg.Connection[Any],
    *,
    portal_role: str = PORTAL_ROLE,
    writer_role: str = WRITER_ROLE,
    revoke_public_create: bool = False,
    dry_run: bool = False,
) -> list[str]:
    """Create the roles if absent and grant them in *conn*'s database, in one transaction.

    Returns the statements, as text. With *revoke_public_create*, PUBLIC's CREATE on schema
    public is revoked too (see :func:`public_may_create`). With *dry_run* nothing is executed.
    Raises InvalidArgumentError for a bad role name, NotMigratedError before ``beaconsql
    upgrade``, psycopg.errors.InsufficientPrivilege when the connected user may not create roles
    or grant.
    """
    statements = grant_statements(
        conn,
        portal_role=portal_role,
        writer_role=writer_role,
        revoke_public_create=revoke_public_create,
    )
    texts = [s.as_string(conn) for s in statements]
    if dry_run:
        return texts
    with conn.transaction():
        for statement in statements:
            try:
                with conn.transaction():
                    conn.execute(statement)
            except psycopg.errors.DuplicateObject:
                pass  # another database of the cluster created the role meanwhile
    return texts
