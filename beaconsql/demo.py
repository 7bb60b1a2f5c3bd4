"""The main job, end to end, on a database of its own (``beaconsql demo``, ``make demo``).

1. A fresh database ``beaconsql_demo`` (dropped and created again on every run) on the given
   server, or on the embedded one; no other database is touched, not even the one the DSN
   names (it is only used to connect).
2. The runner's schema (revision 0001), and history recorded the runner's legacy way: one
   answer per region, no executions rows (the jobs that showed "Pending" forever).
3. ``beaconsql upgrade``: the mirror and the view go in.
4. The worked example's job recorded through the writer: 18 mirrored rows.
5. What the portal reads for both jobs, before and after ``beaconsql backfill``, and verify.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from beaconsql import backfill, db, migration, portal, seed, verify

logger = logging.getLogger(__name__)

DEMO_DATABASE = "beaconsql_demo"


@dataclass(frozen=True)
class JobView:
    """What the portal shows for one job at one moment."""

    jobspec_id: str
    executions: dict[str, Any]
    progress: portal.Progress


@dataclass(frozen=True)
class DemoResult:
    """Everything the demo produced, for the CLI to print.

    ``database`` names the demo's database for messages; ``connection`` is a DSN for it
    without the password (``password_left_out`` says whether there was one), for the commands
    the CLI suggests next.
    """

    database: str
    connection: str
    password_left_out: bool
    writer_job: JobView
    legacy_before: JobView
    first_backfill: backfill.Summary
    legacy_after: JobView
    second_backfill: backfill.Summary
    report: verify.Report


def create_database(server_dsn: str, name: str = DEMO_DATABASE) -> str:
    """Drop and create database *name* on the server of *server_dsn*; return its DSN.

    When *server_dsn* names *name* itself (the demo's own DSN, reused), the server's
    ``postgres`` database is used to connect instead: a database cannot drop itself.
    """
    admin = (
        server_dsn if db.dbname_of(server_dsn) != name else db.with_dbname(server_dsn, "postgres")
    )
    with db.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return db.with_dbname(server_dsn, name)


def _look(conn: Any, jobspec_id: str) -> JobView:
    return JobView(
        jobspec_id=jobspec_id,
        executions=portal.executions_all(conn, jobspec_id),
        progress=portal.progress(conn, jobspec_id),
    )


def run(server_dsn: str, *, step: Callable[[str], None] = lambda _: None) -> DemoResult:
    """Run the demo against the server of *server_dsn* (in its own database); see module doc.

    *step* is told each step before it runs, the first naming the database it replaces.
    """
    dsn = db.with_dbname(server_dsn, DEMO_DATABASE)
    given = db.dbname_of(server_dsn)
    spared = (
        f" (not even {given}, the DSN's database)" if given not in (None, DEMO_DATABASE) else ""
    )
    step(
        f"replacing database {DEMO_DATABASE} ({db.redact_dsn(dsn)}) with a fresh one: dropped if "
        f"there, then created; nothing else on that server is touched{spared}"
    )
    dsn = create_database(server_dsn)
    step("revision 0001: the runner's schema, then history recorded the runner's legacy way")
    migration.upgrade(dsn, "0001")
    with db.connect(dsn, autocommit=True) as conn:
        seed.record_legacy(conn, seed.jobspec(seed.LEGACY_JOBSPEC_ID))
    step("beaconsql upgrade: the mirror triggers and the view executions_unified")
    migration.upgrade(dsn)
    with db.connect(dsn, autocommit=True) as conn:
        step(f"recording {seed.SEED_JOBSPEC_ID} through the writer")
        seed.record_with_writer(conn, seed.jobspec())
        writer_job = _look(conn, seed.SEED_JOBSPEC_ID)
        legacy_before = _look(conn, seed.LEGACY_JOBSPEC_ID)
        step("beaconsql backfill: bringing the legacy history into executions")
        first = backfill.backfill(conn)
        second = backfill.backfill(conn)
        legacy_after = _look(conn, seed.LEGACY_JOBSPEC_ID)
        report = verify.verify(conn)
    connection, password_left_out = db.without_password(dsn)
    return DemoResult(
        database=db.redact_dsn(dsn),
        connection=connection,
        password_left_out=password_left_out,
        writer_job=writer_job,
        legacy_before=legacy_before,
        first_backfill=first,
        legacy_after=legacy_after,
        second_backfill=second,
        report=report,
    )
