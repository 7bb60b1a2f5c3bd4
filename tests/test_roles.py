"""Least privilege (``beaconsql grant``; SPEC "Running it", "Only the mirror's owner can redirect
it"): the portal role reads ``executions_unified`` and ``jobs`` and nothing else, and cannot
stall the mirror; the writer role writes the runner's tables through the mirror, cannot alter
the schema, forge a mirrored row or plant a function the mirror would call; the mirror's
writing functions run with their owner's rights and pin ``search_path``.

Roles are cluster-wide: each test uses role names of its own and drops them at teardown
(``DROP OWNED BY`` in every database where they were granted, then ``DROP ROLE``).

Tests that assert the contract where the implementation deviates are marked
``xfail(strict=True)`` with the reason; each carries a minimal repro in its docstring.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from conftest import dsn_of
from factories import make_direct_execution
from psycopg import sql
from psycopg.types.json import Jsonb

from beaconsql import migration, portal, roles, seed, writer
from beaconsql.cli import main

RUNNER_TABLES = (
    "jobs",
    "executions",
    "cross_region_executions",
    "region_results",
    "cross_region_analyses",
    "transparency_log",
)


@dataclass
class Roles:
    portal: str
    writer: str
    databases: list[psycopg.Connection[Any]] = field(default_factory=list)

    def args(self) -> list[str]:
        return ["--portal-role", self.portal, "--writer-role", self.writer]


@pytest.fixture
def names(db: psycopg.Connection[Any]) -> Iterator[Roles]:
    """Fresh role names; at teardown their grants go in every database they were used in, then
    the roles themselves."""
    suffix = uuid.uuid4().hex[:10]
    made = Roles(portal=f"bq_portal_{suffix}", writer=f"bq_writer_{suffix}", databases=[db])
    yield made
    for conn in made.databases:
        if conn.closed:
            continue
        conn.execute("RESET ROLE")
        conn.execute("RESET search_path")
        for role in (made.portal, made.writer):
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    for role in (made.portal, made.writer):
        db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def grant_cli(dsn: str, made: Roles, *extra: str) -> Result:
    env = {"BEACONSQL_DATABASE_URL": dsn, "DATABASE_URL": None}
    return CliRunner().invoke(main, ["grant", *made.args(), *extra], env=env)


@contextmanager
def acting_as(conn: psycopg.Connection[Any], role: str) -> Iterator[None]:
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    try:
        yield
    finally:
        conn.execute("RESET ROLE")


def refused(
    conn: psycopg.Connection[Any], statement: str | sql.Composable, params: Any = None
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement, params)


def role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def privileges_snapshot(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT c.relname, c.relacl::text FROM pg_class c "
        "WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1"
    ).fetchall()


# --------------------------------------------------------------------------------------------
# grant itself
# --------------------------------------------------------------------------------------------


def test_grant_creates_nologin_roles_and_is_idempotent(db, dsn, names):
    first = grant_cli(dsn, names)
    assert first.exit_code == 0, first.output
    assert f'CREATE ROLE "{names.portal}" NOLOGIN;' in first.stdout or (
        f"CREATE ROLE {names.portal} NOLOGIN;" in first.stdout
    )
    rows = db.execute(
        "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb "
        "FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
        ([names.portal, names.writer],),
    ).fetchall()
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [(False, False, False, False)] * 2
    snapshot = privileges_snapshot(db)

    second = grant_cli(dsn, names, "--json")
    assert second.exit_code == 0, second.output
    payload = json.loads(second.stdout)
    assert payload["dry_run"] is False
    assert not any("CREATE ROLE" in s for s in payload["statements"])
    assert privileges_snapshot(db) == snapshot


def test_grant_dry_run_prints_statements_and_changes_nothing(db, dsn, names):
    before = privileges_snapshot(db)
    result = grant_cli(dsn, names, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "CREATE ROLE" in result.stdout and "GRANT SELECT ON" in result.stdout
    assert names.portal in result.stdout and names.writer in result.stdout
    assert not role_exists(db, names.portal) and not role_exists(db, names.writer)
    assert privileges_snapshot(db) == before

    # with the roles in place, a dry run still changes nothing
    assert grant_cli(dsn, names).exit_code == 0
    db.execute(sql.SQL("REVOKE SELECT ON jobs FROM {}").format(sql.Identifier(names.portal)))
    before = privileges_snapshot(db)
    result = grant_cli(dsn, names, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dry_run"] is True
    assert privileges_snapshot(db) == before


def test_grant_in_two_databases_of_the_cluster(db, dsn, empty_db, names):
    empty_db.autocommit = True
    other_dsn = dsn_of(empty_db)
    migration.upgrade(other_dsn)
    names.databases.append(empty_db)
    seed.record_with_writer(db, seed.jobspec())
    seed.record_with_writer(empty_db, seed.jobspec())

    assert grant_cli(dsn, names).exit_code == 0
    second = grant_cli(other_dsn, names)
    assert second.exit_code == 0, second.output
    assert "CREATE ROLE" not in second.stdout
    for conn in (db, empty_db):
        with acting_as(conn, names.portal):
            assert (
                conn.execute(
                    "SELECT count(*) FROM executions_unified WHERE jobspec_id = %s",
                    (seed.SEED_JOBSPEC_ID,),
                ).fetchone()[0]
                == 18
            )
            refused(conn, "SELECT 1 FROM region_results LIMIT 1")
        with acting_as(conn, names.writer):
            job = seed.jobspec("bias-detection-writer-" + uuid.uuid4().hex[:6])
            seed.record_with_writer(conn, job)
        assert (
            conn.execute(
                "SELECT count(*) FROM executions e JOIN jobs j ON j.id = e.job_id "
                "WHERE j.jobspec_id = %s AND e.mirror_region_result_id IS NOT NULL",
                (job["id"],),
            ).fetchone()[0]
            == 18
        )


# --------------------------------------------------------------------------------------------
# Acting as the portal role
# --------------------------------------------------------------------------------------------


def test_portal_role_reads_the_view_and_jobs_only(db, dsn, names):
    seed.record_with_writer(db, seed.jobspec())
    db.execute("ALTER TABLE region_results DISABLE TRIGGER USER")
    try:
        seed.record_legacy(db, seed.jobspec(seed.LEGACY_JOBSPEC_ID))  # derived in the view
    finally:
        db.execute("ALTER TABLE region_results ENABLE TRIGGER USER")
    assert grant_cli(dsn, names).exit_code == 0
    expected_all = portal.executions_all(db, seed.LEGACY_JOBSPEC_ID)
    expected_progress = portal.progress(db, seed.LEGACY_JOBSPEC_ID).to_dict()
    region_ids = [r[0] for r in db.execute("SELECT id FROM region_results").fetchall()]
    with acting_as(db, names.portal):
        sources = dict(
            db.execute("SELECT source, count(*) FROM executions_unified GROUP BY 1").fetchall()
        )
        assert sources == {"mirrored": 18, "derived": 18}
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 2
        # the portal's own reads, with these grants only
        assert len(portal.executions_all(db, seed.SEED_JOBSPEC_ID)["executions"]) == 18
        assert portal.executions_all(db, seed.LEGACY_JOBSPEC_ID) == expected_all
        assert portal.progress(db, seed.LEGACY_JOBSPEC_ID).to_dict() == expected_progress
        assert len(portal.job_with_executions(db, seed.SEED_JOBSPEC_ID)["executions"]) == 18
        for table in (
            "region_results",
            "executions",
            "cross_region_executions",
            "region_results_mirror_inputs",
            "region_results_mirror_state",
            "region_results_mirror_anomalies",
            "transparency_log",
            "cross_region_analyses",
            "alembic_version",
        ):
            refused(db, sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(table)))
        refused(db, "INSERT INTO jobs (jobspec_id, jobspec_data) VALUES ('x', '{}')")
        refused(db, "UPDATE jobs SET status = 'failed'")
        refused(db, "DELETE FROM jobs")
        refused(db, "SELECT * FROM region_results_mirror_apply(%s)", (region_ids,))
    # nothing else: every privilege the role holds on any relation of the database
    held = db.execute(
        """
        SELECT c.relname, p.priv
        FROM pg_class c
        CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                'REFERENCES', 'TRIGGER']) AS p(priv)
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
          AND has_table_privilege(%s, c.oid, p.priv)
        UNION ALL
        SELECT c.relname, 'USAGE' FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace
          AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(%s, c.oid, 'USAGE') END
        ORDER BY 1, 2
        """,
        (names.portal, names.portal),
    ).fetchall()
    assert held == [("executions_unified", "SELECT"), ("jobs", "SELECT")]


# --------------------------------------------------------------------------------------------
# Acting as the writer role
# --------------------------------------------------------------------------------------------


def test_writer_role_records_runs_mirrored_by_the_triggers(db, dsn, names):
    assert grant_cli(dsn, names).exit_code == 0
    with acting_as(db, names.writer):
        recorded = seed.record_with_writer(db, seed.jobspec())
        seed.record_legacy(db, seed.jobspec(seed.LEGACY_JOBSPEC_ID))
        # the runner's direct write, its cancel, and a region update, all as the writer
        job = writer.create_job(db, seed.jobspec("bias-detection-direct"))
        make_direct_execution(
            db, job_id=job, model_id="llama3.2-1b", question_id="greatest_invention"
        )
        db.execute(
            "UPDATE executions SET status = 'cancelled' WHERE job_id = %s "
            "AND mirror_region_result_id IS NOT NULL AND model_id = 'mistral-7b'",
            (recorded.job_id,),
        )
        db.execute(
            "DELETE FROM cross_region_executions WHERE jobspec_id = %s", (seed.LEGACY_JOBSPEC_ID,)
        )
    rows = db.execute(
        "SELECT count(*) FILTER (WHERE mirror_region_result_id IS NOT NULL), "
        "       count(*) FILTER (WHERE mirror_region_result_id IS NULL) "
        "FROM executions WHERE job_id = %s",
        (recorded.job_id,),
    ).fetchone()
    assert rows == (12, 6)  # 6 mistral-7b rows detached by the cancel, 12 still mirrored
    assert (
        db.execute(
            "SELECT count(*) FROM executions_unified WHERE jobspec_id = %s", (seed.SEED_JOBSPEC_ID,)
        ).fetchone()[0]
        == 18
    )
    assert (
        db.execute(
            "SELECT count(*) FROM executions_unified WHERE jobspec_id = %s",
            (seed.LEGACY_JOBSPEC_ID,),
        ).fetchone()[0]
        == 0
    )
    assert (
        db.execute(
            "SELECT count(*) FROM executions e JOIN jobs j ON j.id = e.job_id "
            "WHERE j.jobspec_id = %s",
            (seed.LEGACY_JOBSPEC_ID,),
        ).fetchone()[0]
        == 0
    )
    assert (
        db.execute(
            "SELECT count(*) FROM region_results_mirror_inputs WHERE NOT mirrored"
        ).fetchone()[0]
        == 0
    )


WRITER_REFUSED = [
    "CREATE TABLE public.writer_owned (x int)",
    "CREATE TABLE writer_owned (x int)",
    "ALTER TABLE executions ADD COLUMN writer_col int",
    "ALTER TABLE executions DROP COLUMN mirror_evidence",
    "ALTER TABLE region_results DISABLE TRIGGER USER",
    "ALTER TABLE region_results DISABLE TRIGGER zz_mirror_update",
    "CREATE INDEX writer_idx ON executions (status)",
    "DROP TABLE executions",
    "DROP VIEW executions_unified",
    "DROP TRIGGER zz_mirror_update ON region_results",
    "TRUNCATE executions",
    "CREATE OR REPLACE FUNCTION public.region_results_mirror_update() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
    "CREATE SCHEMA writer_schema",
    "SET session_replication_role = replica",
]


def test_writer_role_cannot_alter_the_schema_or_skip_the_mirror(db, dsn, names):
    assert grant_cli(dsn, names).exit_code == 0
    # it may read and write the runner's tables, and has no TRUNCATE, REFERENCES, TRIGGER
    for table in RUNNER_TABLES:
        for privilege in ("SELECT", "INSERT", "UPDATE"):
            assert db.execute(
                "SELECT has_any_column_privilege(%s, %s, %s)", (names.writer, table, privilege)
            ).fetchone()[0], (table, privilege)
        assert db.execute(
            "SELECT has_table_privilege(%s, %s, 'DELETE')", (names.writer, table)
        ).fetchone()[0], table
    # but not the mirror's columns of executions, nor its tables
    for column in ("mirror_region_result_id", "mirror_evidence"):
        for privilege in ("INSERT", "UPDATE"):
            assert not db.execute(
                "SELECT has_column_privilege(%s, 'executions', %s, %s)",
                (names.writer, column, privilege),
            ).fetchone()[0], (column, privilege)
    for table in (
        "region_results_mirror_state",
        "region_results_mirror_anomalies",
        "executions_mirror_locks",
    ):
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            assert not db.execute(
                "SELECT has_table_privilege(%s, %s, %s)", (names.writer, table, privilege)
            ).fetchone()[0], (table, privilege)
    assert (
        db.execute(
            "SELECT count(*) FROM pg_class c CROSS JOIN unnest(ARRAY['TRUNCATE', 'REFERENCES', "
            "'TRIGGER']) p(priv) WHERE c.relnamespace = 'public'::regnamespace "
            "AND c.relkind IN ('r', 'v', 'p') AND has_table_privilege(%s, c.oid, p.priv)",
            (names.writer,),
        ).fetchone()[0]
        == 0
    )
    with acting_as(db, names.writer):
        allowed = []
        for statement in WRITER_REFUSED:
            try:
                db.execute(statement)
            except psycopg.errors.InsufficientPrivilege:
                continue
            allowed.append(statement)
        assert allowed == []
    assert db.execute(
        "SELECT to_regclass('public.writer_owned') IS NULL AND NOT EXISTS ("
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'executions'"
        " AND column_name = 'writer_col')"
    ).fetchone()[0]


# --------------------------------------------------------------------------------------------
# Functions and search_path
# --------------------------------------------------------------------------------------------


def mirror_functions(db: psycopg.Connection[Any]) -> list[tuple[str, bool, list[str], str]]:
    """(signature, prosecdef, proconfig, language) of every function named like '%mirror%'."""
    return db.execute(
        "SELECT p.oid::regprocedure::text, p.prosecdef, coalesce(p.proconfig, '{}'), l.lanname "
        "FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
        "WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE '%mirror%' "
        "ORDER BY 1"
    ).fetchall()


def pins_search_path(config: list[str]) -> bool:
    return any(c.startswith("search_path=") for c in config)


# The functions the view calls: pure, reading no table; PUBLIC may execute them.
RULE_FUNCTIONS = {
    "executions_mirror_finished(text)",
    "executions_mirror_lock_key(integer,text,uuid)",
    "executions_mirror_readable(timestamp without time zone)",
    "executions_mirror_row(executions)",
    "executions_mirror_status(text)",
    "executions_mirror_time(jsonb)",
    "jobs_mirror_dimensions(jsonb)",
    "jobs_mirror_fingerprint(integer,jsonb)",
    "jobs_mirror_models(jsonb,text)",
    "jobs_mirror_questions(jsonb)",
    "region_results_mirror_element_row(text,timestamp without time zone,"
    "timestamp without time zone,jsonb)",
    "region_results_mirror_elements(jsonb)",
    "region_results_mirror_region_status(text,timestamp with time zone)",
    "region_results_mirror_rows(region_results,integer,jsonb,text,text[])",
    "region_results_mirror_stores_nothing(region_results)",
    "region_results_mirror_too_long(text,text)",
}


def test_only_the_rule_is_public_and_writes_run_with_owner_rights(db):
    """SPEC "Only the mirror's owner can redirect it": PUBLIC may execute the rule's functions
    only; every other mirror function locks, plans or writes, runs with its owner's rights
    (SECURITY DEFINER, search_path pinned) and no one else may call it."""
    rows = mirror_functions(db)
    public = {
        name
        for name, _, _, _ in rows
        if db.execute(
            "SELECT has_function_privilege('public', %s::regprocedure, 'EXECUTE')", (name,)
        ).fetchone()[0]
    }
    assert public == RULE_FUNCTIONS
    for name, secdef, config, _ in rows:
        if name in RULE_FUNCTIONS:
            assert not secdef, name
        elif name not in (
            "region_results_mirror_plan(uuid[],text[],boolean)",
            "region_results_mirror_changed_pairs(jsonb,jsonb)",
            "region_results_mirror_output_changed(jsonb,jsonb,jsonb,jsonb)",
            "region_results_mirror_narrow(region_results,text[])",
            "executions_mirror_insert(executions_mirror_row[])",
            "executions_mirror_update(integer[],executions_mirror_row[])",
        ):  # read-only, or called by owner-rights functions only
            assert secdef and "search_path=pg_catalog, pg_temp" in config, name


def test_trigger_functions_pin_search_path(db):
    rows = {name: config for name, _, config, _ in mirror_functions(db)}
    triggers = [
        t[0]
        for t in db.execute(
            "SELECT DISTINCT t.tgfoid::regprocedure::text FROM pg_trigger t "
            "WHERE NOT t.tgisinternal AND t.tgname LIKE 'zz%mirror%' ORDER BY 1"
        ).fetchall()
    ]
    assert len(triggers) >= 5
    assert set(triggers) <= set(rows)  # every trigger function is a mirror function
    assert [t for t in triggers if not pins_search_path(rows[t])] == []
    # and so does every procedural (plpgsql) mirror function they call
    assert [
        name
        for name, _, config, lang in mirror_functions(db)
        if lang == "plpgsql" and not pins_search_path(config)
    ] == []


@pytest.mark.xfail(
    strict=True,
    reason="nine SQL helper functions of the mirror (executions_mirror_lock_key, "
    "executions_mirror_status, executions_mirror_time, jobs_mirror_fingerprint, "
    "jobs_mirror_models, jobs_mirror_questions, region_results_mirror_element_row, "
    "region_results_mirror_elements, region_results_mirror_region_status) drop SET "
    "search_path on purpose so that they inline; SPEC 'functions pin search_path'",
)
def test_every_mirror_function_pins_search_path(db):
    """Repro: SELECT oid::regprocedure FROM pg_proc WHERE proname LIKE '%mirror%' AND
    pronamespace = 'public'::regnamespace AND proconfig IS NULL;  -- 9 rows at c930b77.
    Safe where a pinned function calls them (the triggers); not where the view or the
    portal's queries call them in the session's search_path (see the test below)."""
    assert [
        name for name, _, config, _ in mirror_functions(db) if not pins_search_path(config)
    ] == []


@contextmanager
def hostile_functions_first(db: psycopg.Connection[Any]) -> Iterator[None]:
    """A schema ``evil`` put before pg_catalog, shadowing a table and functions the mirror's
    SQL uses, with wrong answers."""
    db.execute("CREATE SCHEMA evil")
    try:
        db.execute("CREATE TABLE evil.executions (LIKE public.executions INCLUDING DEFAULTS)")
        for signature, result in (
            ("md5(text)", "text AS $$ SELECT 'evil'::text $$"),
            ("lower(text)", "text AS $$ SELECT 'evil'::text $$"),
            ("btrim(text)", "text AS $$ SELECT 'evil'::text $$"),
            ("jsonb_typeof(jsonb)", "text AS $$ SELECT 'evil'::text $$"),
            ("hashtextextended(text, bigint)", "bigint AS $$ SELECT 42::bigint $$"),
        ):
            db.execute(f"CREATE FUNCTION evil.{signature} RETURNS {result} LANGUAGE sql")
        db.execute("SET search_path = evil, pg_catalog, public")
        yield
    finally:
        db.execute("RESET search_path")
        db.execute("DROP SCHEMA evil CASCADE")


def test_mirror_unaffected_by_shadowing_functions_before_pg_catalog(db):
    """Plain schema-qualified writes (no function of the session involved): the triggers'
    pinned search_path keeps the mirror right."""
    spec = seed.jobspec("bias-detection-hostile-functions")
    elements = [
        {
            "model_id": m,
            "question_id": q,
            "status": "completed",
            "started_at": "2025-10-12T17:00:00Z",
            "completed_at": "2025-10-12T17:00:03Z",
            "output": {"response": m + q},
        }
        for m in seed.MODELS
        for q in seed.QUESTIONS
    ]
    region_id, run_id = uuid.uuid4(), uuid.uuid4()
    with hostile_functions_first(db):
        job_id = db.execute(
            "INSERT INTO public.jobs (jobspec_id, jobspec_data) VALUES (%s, %s) RETURNING id",
            (spec["id"], Jsonb(spec)),
        ).fetchone()[0]
        db.execute(
            "INSERT INTO public.cross_region_executions (id, jobspec_id, total_regions) "
            "VALUES (%s, %s, 2)",
            (run_id, spec["id"]),
        )
        db.execute(
            "INSERT INTO public.region_results (id, cross_region_execution_id, region, "
            "status, started_at, completed_at, execution_output) VALUES (%s, %s, 'US', "
            "'running', '2025-10-12 17:00+00', NULL, %s)",
            (region_id, run_id, Jsonb({"executions": elements[:8]})),
        )
        db.execute(
            "UPDATE public.region_results SET execution_output = %s WHERE id = %s",
            (Jsonb({"executions": elements}), region_id),
        )  # one element appended
        db.execute(
            "UPDATE public.region_results SET status = 'SUCCESS', completed_at = "
            "'2025-10-12 17:01+00' WHERE id = %s",
            (region_id,),
        )
        db.execute(
            "INSERT INTO public.executions (job_id, provider_id, region, status, "
            "model_id, question_id) VALUES (%s, 'p', 'US', 'failed', 'mistral-7b', "
            "'taiwan_status')",
            (job_id,),
        )
        assert db.execute("SELECT count(*) FROM evil.executions").fetchone()[0] == 0
    rows = db.execute(
        "SELECT status, mirror_region_result_id IS NOT NULL, count(*) "
        "FROM public.executions WHERE job_id = %s GROUP BY 1, 2 ORDER BY 1, 2",
        (job_id,),
    ).fetchall()
    assert rows == [("completed", True, 8), ("failed", False, 1)]
    assert (
        db.execute(
            "SELECT count(*) FROM region_results_mirror_inputs WHERE NOT mirrored"
        ).fetchone()[0]
        == 0
    )


def test_view_and_portal_reads_unaffected_by_shadowing_functions(db):
    """Repro: CREATE SCHEMA evil; CREATE FUNCTION evil.md5(text) RETURNS text LANGUAGE sql
    AS $$ SELECT 'evil'::text $$; (same for jsonb_typeof(jsonb)); SET search_path = evil,
    pg_catalog, public; SELECT source, count(*) FROM executions_unified GROUP BY 1;
    -- 'derived' for every region result, although all are mirrored; progress questions
    become ['default', ...]."""
    seed.record_with_writer(db, seed.jobspec())
    expected_all = portal.executions_all(db, seed.SEED_JOBSPEC_ID)
    expected_progress = portal.progress(db, seed.SEED_JOBSPEC_ID).to_dict()
    with hostile_functions_first(db):
        got_all = portal.executions_all(db, seed.SEED_JOBSPEC_ID)
        got_progress = portal.progress(db, seed.SEED_JOBSPEC_ID).to_dict()
    assert got_all == expected_all
    assert got_progress == expected_progress


def test_scoped_reads_unaffected_by_planted_overloads(db):
    """Repro: a role that may CREATE in schema public (PUBLIC may, on a database created before
    PostgreSQL 15) creates public.executions_unified_of_execution(integer) and (smallint)
    returning a forged row; psycopg sends a small Python int as smallint, so a call without a
    cast resolved to the planted function and ran it with the reader's rights."""
    seed.record_with_writer(db, seed.jobspec())
    row = db.execute(
        "SELECT execution_id FROM executions_unified WHERE execution_id IS NOT NULL LIMIT 1"
    ).fetchone()
    assert row is not None and row[0] < 32768
    expected = portal.execution_details(db, row[0])
    expected_all = portal.executions_all(db, seed.SEED_JOBSPEC_ID)
    # each planted function returns every row but the ones asked for
    for name, column, types in (
        ("executions_unified_of_execution", "execution_id", ("integer", "smallint")),
        ("executions_unified_of_job", "jobspec_id", ("varchar", "name")),
    ):
        for planted in types:
            db.execute(
                f"CREATE FUNCTION public.{name}(p {planted}) RETURNS SETOF executions_unified "
                f"LANGUAGE sql AS $$ SELECT * FROM executions_unified u "
                f"WHERE u.{column} IS DISTINCT FROM p $$"
            )
    assert portal.execution_details(db, row[0]) == expected
    assert portal.executions_all(db, seed.SEED_JOBSPEC_ID) == expected_all


def test_writer_unaffected_by_shadowing_functions(db):
    """With evil.jsonb_typeof(jsonb) returning 'evil' and SET search_path = evil, pg_catalog,
    public, the writer's statements once called it: record_pair replaced the region's elements
    with its own each time (one left per region) and executions held 2 completed and 16 failed
    rows. Then, with its statements qualified, finish_region still closed both regions as
    failed ('all executions failed', 0 of 1 pairs): the rule's helpers it inlines
    (region_results_mirror_elements, jobs_mirror_models, jobs_mirror_questions) called it too,
    until revision 0010."""
    with hostile_functions_first(db):
        recorded = seed.record_with_writer(db, seed.jobspec())
    statuses = db.execute(
        "SELECT status, count(*) FROM executions WHERE job_id = %s GROUP BY 1", (recorded.job_id,)
    ).fetchall()
    assert statuses == [("completed", 18)]
    regions = db.execute(
        "SELECT r.status, r.error_message, r.metadata ->> 'success_count', "
        "r.metadata ->> 'total_executions' FROM region_results r "
        "WHERE r.cross_region_execution_id = %s",
        (recorded.run_id,),
    ).fetchall()
    assert regions == [("success", "", "9", "9")] * 2
    run = db.execute(
        "SELECT status, success_count FROM cross_region_executions WHERE id = %s",
        (recorded.run_id,),
    ).fetchone()
    assert run == ("completed", 2)


def record_and_count(db: psycopg.Connection[Any]) -> tuple[int, str]:
    """Record the worked example through the writer, then a direct row into public.executions
    (schema-qualified: the claim trigger must not be redirected either)."""
    spec = seed.jobspec("bias-detection-" + uuid.uuid4().hex[:10])
    recorded = seed.record_with_writer(db, spec)
    db.execute(
        "INSERT INTO public.executions (job_id, provider_id, region, status, model_id, "
        "question_id) VALUES (%s, 'modal-us-east', 'US', 'completed', 'llama3.2-1b', "
        "'greatest_invention')",
        (recorded.job_id,),
    )
    return recorded.job_id or 0, spec["id"]


def public_counts(db: psycopg.Connection[Any], job_id: int) -> tuple[int, int]:
    return db.execute(
        "SELECT count(*) FILTER (WHERE mirror_region_result_id IS NOT NULL), "
        "count(*) FILTER (WHERE mirror_region_result_id IS NULL) "
        "FROM public.executions WHERE job_id = %s",
        (job_id,),
    ).fetchone()


def test_hostile_search_path_does_not_redirect_the_mirror(db):
    db.execute("CREATE SCHEMA evil")
    try:
        db.execute("CREATE TABLE evil.executions (LIKE public.executions INCLUDING DEFAULTS)")
        db.execute(
            "CREATE TABLE evil.region_results_mirror_state "
            "(LIKE public.region_results_mirror_state INCLUDING ALL)"
        )
        db.execute("SET search_path = evil, public")
        job_id, _ = record_and_count(db)
        assert db.execute("SELECT count(*) FROM evil.executions").fetchone()[0] == 0
        assert (
            db.execute("SELECT count(*) FROM evil.region_results_mirror_state").fetchone()[0] == 0
        )
        # the direct row took its key from the mirror: 17 mirrored + 1 direct
        assert public_counts(db, job_id) == (17, 1)
    finally:
        db.execute("RESET search_path")
        db.execute("DROP SCHEMA evil CASCADE")


@pytest.mark.parametrize("search_path", [None, "pg_temp, public"])
def test_temp_table_named_executions_does_not_capture_the_mirror(db, search_path):
    db.execute("CREATE TEMP TABLE executions (LIKE public.executions INCLUDING DEFAULTS)")
    try:
        if search_path:
            db.execute(f"SET search_path = {search_path}")
        assert db.execute("SELECT count(*) FROM executions").fetchone()[0] == 0  # the temp one
        job_id, _ = record_and_count(db)
        assert db.execute("SELECT count(*) FROM pg_temp.executions").fetchone()[0] == 0
        assert public_counts(db, job_id) == (17, 1)
    finally:
        db.execute("RESET search_path")
        db.execute("DROP TABLE pg_temp.executions")


def test_hostile_search_path_as_the_writer_role(db, dsn, names):
    """The writer role with a schema of its own first in search_path (it may own one when the
    administrator gives it CREATE on a schema): the mirror still writes public.executions."""
    assert grant_cli(dsn, names).exit_code == 0
    db.execute(
        sql.SQL("CREATE SCHEMA writer_evil AUTHORIZATION {}").format(sql.Identifier(names.writer))
    )
    try:
        with acting_as(db, names.writer):
            db.execute(
                "CREATE TABLE writer_evil.executions (LIKE public.executions INCLUDING DEFAULTS)"
            )
            db.execute("SET search_path = writer_evil, public")
            spec = seed.jobspec("bias-detection-" + uuid.uuid4().hex[:10])
            recorded = seed.record_with_writer(db, spec)
            db.execute("RESET search_path")
            assert db.execute("SELECT count(*) FROM writer_evil.executions").fetchone()[0] == 0
        assert public_counts(db, recorded.job_id or 0) == (18, 0)
    finally:
        db.execute("RESET search_path")
        db.execute("DROP SCHEMA writer_evil CASCADE")


def test_grant_statements_name_only_existing_objects(db):
    """The statements grant runs (no database change): roles quoted as identifiers."""
    statements = [
        s.as_string(db)
        for s in roles.grant_statements(
            db, portal_role="bq_never_created_p", writer_role="bq_never_created_w"
        )
    ]
    assert statements[0].startswith("CREATE ROLE")
    portal_grants = [s for s in statements if "bq_never_created_p" in s and "GRANT" in s]
    assert portal_grants == [
        'GRANT USAGE ON SCHEMA public TO "bq_never_created_p"',
        'GRANT SELECT ON "public"."executions_unified", "public"."jobs" TO "bq_never_created_p"',
        'GRANT EXECUTE ON FUNCTION "public"."serve_health"(), "public"."serve_metrics"(), '
        '"public"."serve_job_known"(text) TO "bq_never_created_p"',
    ]
    assert not role_exists(db, "bq_never_created_p")


# --------------------------------------------------------------------------------------------
# A reader cannot stall the mirror; a writer cannot redirect it
# --------------------------------------------------------------------------------------------


def test_portal_role_cannot_stall_the_mirror(db, dsn, names, connect):
    """As the portal role, the advisory lock the mirror once took for (job, region) is free to
    take and stalls nothing any more; the mirror's own lock table refuses it."""
    assert grant_cli(dsn, names).exit_code == 0
    spec = seed.jobspec("bias-detection-stall", regions=["US"])
    job = writer.create_job(db, spec)
    run = writer.start_run(db, spec["id"], regions=["US"])
    region = writer.start_region(db, run, "US", provider_id="modal-us-east")
    reader = connect(autocommit=False)
    with acting_as(reader, names.portal):
        reader.execute(
            "SELECT pg_advisory_lock(hashtextextended('beaconsql mirror ' || %s || ' US', 0))",
            (job,),
        )
        for statement in (
            "SELECT 1 FROM executions_mirror_locks FOR UPDATE",
            "SELECT 1 FROM executions_mirror_locks",
            "SELECT executions_mirror_lock(ARRAY['job 1 US'])",
        ):
            refused(reader, statement)
            reader.rollback()
            reader.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(names.portal)))
    db.execute("SET lock_timeout = '2s'")
    writer.record_pair(
        db, region, model_id="llama3.2-1b", question_id="greatest_invention", status="completed"
    )
    db.execute("RESET lock_timeout")
    assert db.execute(
        "SELECT count(*) FROM executions WHERE mirror_region_result_id = %s", (region,)
    ).fetchone() == (1,)


def test_writer_role_cannot_forge_a_mirrored_row(db, dsn, names):
    assert grant_cli(dsn, names).exit_code == 0
    recorded = seed.record_with_writer(db, seed.jobspec())
    [region] = [recorded.region_result_ids["US"]]
    with acting_as(db, names.writer):
        refused(
            db,
            "INSERT INTO executions (job_id, provider_id, region, status, model_id, question_id,"
            " mirror_region_result_id, mirror_evidence) VALUES (%s, 'p', 'US', 'completed',"
            " 'x', 'y', %s, 3)",
            (recorded.job_id, region),
        )
        refused(
            db,
            "UPDATE executions SET mirror_region_result_id = %s WHERE job_id = %s",
            (region, recorded.job_id),
        )
        refused(db, "UPDATE region_results_mirror_state SET r_xmin = NULL")
        refused(db, "DELETE FROM region_results_mirror_anomalies")
        refused(db, "SELECT * FROM region_results_mirror_apply(ARRAY[%s]::uuid[])", (region,))


def test_a_function_planted_in_public_is_never_called_by_the_mirror(db, dsn, names):
    """Where PUBLIC may create in schema public (PostgreSQL's default before 15), the writer
    role plants overloads that match the mirror's calls more closely than its own (varchar
    arguments, as the runner's columns are): the owner's writes, triggers and backfill never
    call them. `beaconsql grant` warns, and with --revoke-public-create revokes."""
    db.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    try:
        result = grant_cli(dsn, names)
        assert result.exit_code == 0
        assert "WARNING: PUBLIC may create objects in schema public" in result.stderr
        db.execute(sql.SQL("CREATE TABLE public.planted_calls (what text)"))
        db.execute(
            sql.SQL("GRANT INSERT ON public.planted_calls TO {}").format(
                sql.Identifier(names.writer)
            )
        )
        with acting_as(db, names.writer):
            for signature, body in (
                ("executions_mirror_status(word varchar) RETURNS text", "'completed'"),
                (
                    "executions_mirror_lock_key(job_id integer, region varchar, rr uuid) "
                    "RETURNS text",
                    "'planted'",
                ),
                (
                    "region_results_mirror_rows(r region_results, job integer, spec jsonb, "
                    "job_status varchar, only_pairs text[] DEFAULT NULL) RETURNS SETOF text",
                    "'planted'",
                ),
            ):
                name = signature.split("(")[0]
                db.execute(
                    f"CREATE FUNCTION public.{signature} LANGUAGE plpgsql AS $$ BEGIN "
                    f"INSERT INTO public.planted_calls VALUES ('{name}'); "
                    f"RETURN {'NEXT ' if 'SETOF' in signature else ''}{body}; "
                    f"{'RETURN; ' if 'SETOF' in signature else ''}END $$"
                )
        spec = seed.jobspec("bias-detection-planted", regions=["US", "EU"])
        recorded = seed.record_with_writer(db, spec)
        db.execute("ALTER TABLE region_results DISABLE TRIGGER USER")
        db.execute(
            "UPDATE region_results SET status = 'FAILED' WHERE id = %s",
            (recorded.region_result_ids["EU"],),
        )
        db.execute("ALTER TABLE region_results ENABLE TRIGGER USER")
        from beaconsql import backfill, verify

        assert backfill.backfill(db).complete
        assert verify.verify(db).exit_code == 0
        assert portal.progress(db, spec["id"]).overall.counts == {"completed": 18}
        assert db.execute("SELECT count(*) FROM public.planted_calls").fetchone() == (0,)

        revoked = grant_cli(dsn, names, "--revoke-public-create")
        assert revoked.exit_code == 0
        assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in revoked.stdout
        assert "WARNING" not in revoked.stderr
        assert not roles.public_may_create(db)
    finally:
        db.execute("DROP TABLE IF EXISTS public.planted_calls")
        db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
