"""The Alembic revisions (migrations/versions): create, adopt, downgrade, offline SQL, locks,
and an upgrade from 0001 to head while writers keep writing (no writer blocked for long).

SPEC "Schema" is the authority; the runner's schema is shared/reference/runner-app.md sections
1.1-1.5 and 9. Every test runs on a real PostgreSQL, on a fresh clone of one of conftest's
template databases (an empty one, one migrated to head, or one the runner built with its
history: tests/fixtures/runner/).

pytest-alembic's automatic collector is disabled (pyproject.toml); its built-in tests are called
here with a MigrationContext built on beaconsql's alembic config and a SQLAlchemy connection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy
from conftest import dsn_of
from factories import write_bulk_legacy
from helpers import REPO, assert_no_constraint_violation, cli_run, scalar
from oracle import assert_exact, assert_matches_oracle
from psycopg import sql
from psycopg.types.json import Jsonb
from pytest_alembic import Config
from pytest_alembic.executor import CommandExecutor, ConnectionExecutor
from pytest_alembic.runner import MigrationContext
from pytest_alembic.tests import (
    test_single_head_revision as pa_single_head_revision,
)
from pytest_alembic.tests import (
    test_up_down_consistency as pa_up_down_consistency,
)
from pytest_alembic.tests import (
    test_upgrade as pa_upgrade,
)
from sqlalchemy.pool import NullPool

from beaconsql import migration, seed, writer
from beaconsql.errors import MigrationError

RUNNER_FIXTURES = Path(__file__).parent / "fixtures" / "runner"

# ---------------------------------------------------------------------------------------------
# What the contract names (SPEC "Schema"; runner-app.md 1.3, 1.4, 1.5).
# ---------------------------------------------------------------------------------------------

BASELINE_TABLES = [
    "jobs",
    "executions",
    "cross_region_executions",
    "region_results",
    "cross_region_analyses",
    "transparency_log",
]

# (name, type, NOT NULL, default) in physical order: runner-app.md 1.3, then the mirror's two.
EXECUTIONS_RUNNER_COLUMNS = [
    ("id", "integer", True, "nextval('executions_id_seq'::regclass)"),
    ("job_id", "integer", False, None),
    ("provider_id", "character varying(255)", True, None),
    ("region", "character varying(100)", True, None),
    ("status", "character varying(50)", False, "'pending'::character varying"),
    ("started_at", "timestamp without time zone", False, None),
    ("completed_at", "timestamp without time zone", False, None),
    ("output_data", "jsonb", False, None),
    ("receipt_data", "jsonb", False, None),
    ("created_at", "timestamp without time zone", False, "now()"),
    ("ipfs_cid", "character varying(100)", False, None),
    ("ipfs_pinned_at", "timestamp without time zone", False, None),
    ("cross_region_execution_id", "uuid", False, None),
    ("model_id", "character varying(50)", False, "'llama3.2-1b'::character varying"),
    ("is_substantive", "boolean", False, "false"),
    ("is_content_refusal", "boolean", False, "false"),
    ("is_technical_error", "boolean", False, "false"),
    ("response_classification", "character varying(50)", False, "'unknown'::character varying"),
    ("response_length", "integer", False, "0"),
    ("system_prompt", "text", False, None),
    ("question_id", "character varying(255)", False, None),
    ("retry_count", "integer", True, "0"),
    ("max_retries", "integer", True, "3"),
    ("last_retry_at", "timestamp with time zone", False, None),
    ("retry_history", "jsonb", False, "'[]'::jsonb"),
    ("original_error", "text", False, None),
]
MIRROR_COLUMNS = ["mirror_region_result_id", "mirror_evidence"]

EXECUTIONS_INDEXES = {
    "executions_pkey",
    "idx_executions_ipfs_cid",
    "idx_executions_job_id",
    "idx_executions_status",
    "idx_executions_region",
    "idx_executions_created_at",
    "idx_executions_job_created_desc",
    "idx_executions_job_status_created",
    "idx_executions_cross_region_execution_id",
    "idx_executions_model_id",
    "idx_executions_model_region",
    "idx_executions_classification",
    "idx_executions_substantive",
    "idx_executions_content_refusal",
    "idx_executions_response_length",
    "idx_executions_retry_count",
    "idx_executions_status_retry",
    "idx_executions_dedup_with_question",
}

REGION_RESULTS_COLUMNS = [
    "id",
    "cross_region_execution_id",
    "region",
    "provider_id",
    "provider_info",
    "status",
    "started_at",
    "completed_at",
    "duration_ms",
    "execution_output",
    "error_message",
    "scoring",
    "metadata",
    "created_at",
    "updated_at",
    "model_id",
]

CHK_EXECUTIONS_STATUS = (
    "CHECK (((status)::text = ANY ((ARRAY['pending'::character varying, "
    "'running'::character varying, 'completed'::character varying, "
    "'failed'::character varying, 'cancelled'::character varying])::text[])))"
)
CHK_JOBS_STATUS = (
    "CHECK (((status)::text = ANY ((ARRAY['created'::character varying, "
    "'queued'::character varying, 'running'::character varying, "
    "'completed'::character varying, 'failed'::character varying, "
    "'cancelled'::character varying])::text[])))"
)

# The executions/cross_region_analyses columns an adoption may add (and a downgrade keeps:
# "adopted columns are never dropped, since the runner writes them").
ADOPTABLE_COLUMNS = {("executions", c[0]) for c in EXECUTIONS_RUNNER_COLUMNS} | {
    ("cross_region_analyses", "summary_source"),
    ("region_results", "model_id"),
}

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def settle(conn: psycopg.Connection[Any]) -> str:
    """End *conn*'s transaction (it must hold no lock while a revision runs); return its DSN."""
    if not conn.autocommit:
        conn.commit()
        conn.autocommit = True
    return dsn_of(conn)


def upgrade(conn: psycopg.Connection[Any], revision: str = "head") -> Any:
    return migration.upgrade(settle(conn), revision)


def downgrade(conn: psycopg.Connection[Any], revision: str) -> Any:
    return migration.downgrade(settle(conn), revision)


def load_fixture(conn: psycopg.Connection[Any], *names: str) -> None:
    settle(conn)
    for name in names:
        conn.execute((RUNNER_FIXTURES / name).read_text())


def public_tables(conn: psycopg.Connection[Any]) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind IN ('r', 'p') ORDER BY relname"
        )
    ]


def columns_of(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str, bool, Any]]:
    return [
        tuple(r)
        for r in conn.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid)
            FROM pg_attribute a
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """,
            (f"public.{table}",),
        )
    ]


def schema_objects(
    conn: psycopg.Connection[Any], tables: list[str] | None = None
) -> dict[tuple[str, ...], Any]:
    """Describe the public schema: one key per object, its definition as the value.

    Functions (pg_get_functiondef), views (pg_get_viewdef), triggers (pg_get_triggerdef),
    tables, columns (type, NOT NULL, default, position among the table's columns is not part
    of the value), constraints (pg_get_constraintdef, validated), indexes (pg_get_indexdef,
    valid) and sequences (parameters). *tables* limits tables/columns/constraints/indexes/
    triggers to those tables.
    """
    rel_filter = "" if tables is None else "AND c.relname = ANY(%(tables)s)"
    params = {"tables": tables}
    out: dict[tuple[str, ...], Any] = {}
    if tables is None:
        for sig, definition in conn.execute(
            "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_proc p "
            "WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')"
        ):
            out[("function", sig)] = definition
        for name, definition in conn.execute(
            "SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('v', 'm')"
        ):
            out[("view", name)] = definition
        for name, start, inc, typ in conn.execute(
            "SELECT c.relname, s.seqstart, s.seqincrement, format_type(s.seqtypid, NULL) "
            "FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid "
            "WHERE c.relnamespace = 'public'::regnamespace"
        ):
            out[("sequence", name)] = (start, inc, typ)
    for name, kind in conn.execute(
        "SELECT c.relname, c.relkind::text FROM pg_class c "
        f"WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') {rel_filter}",
        params,
    ):
        out[("table", name)] = kind
    for table, column, typ, notnull, default in conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "       pg_get_expr(d.adbin, d.adrelid) "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') "
        f"AND a.attnum > 0 AND NOT a.attisdropped {rel_filter}",
        params,
    ):
        out[("column", table, column)] = (typ, notnull, default)
    for table, name, definition, validated in conn.execute(
        "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid), k.convalidated "
        "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        # NOT NULL constraints are listed here from PostgreSQL 18 on; the columns' notnull
        # above already holds them, on every release.
        f"WHERE c.relnamespace = 'public'::regnamespace AND k.contype <> 'n' {rel_filter}",
        params,
    ):
        out[("constraint", table, name)] = (definition, validated)
    for table, name, definition, valid in conn.execute(
        "SELECT c.relname, ic.relname, pg_get_indexdef(i.indexrelid), i.indisvalid "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_class ic ON ic.oid = i.indexrelid "
        f"WHERE c.relnamespace = 'public'::regnamespace {rel_filter}",
        params,
    ):
        out[("index", table, name)] = (definition, valid)
    for table, name, definition, enabled in conn.execute(
        "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text "
        "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        f"WHERE NOT t.tgisinternal AND c.relnamespace = 'public'::regnamespace {rel_filter}",
        params,
    ):
        out[("trigger", table, name)] = (definition, enabled)
    return out


def changed_objects(
    before: dict[tuple[str, ...], Any], after: dict[tuple[str, ...], Any]
) -> dict[tuple[str, ...], tuple[Any, Any]]:
    """Return each object of *before* that is missing from *after* or defined differently."""
    return {k: (v, after.get(k, "<missing>")) for k, v in before.items() if after.get(k) != v}


def table_rows(
    conn: psycopg.Connection[Any], columns: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Return every row of each table, projected on the given columns, as sorted JSON texts."""
    out = {}
    for table, cols in columns.items():
        query = sql.SQL("SELECT to_jsonb(x)::text FROM (SELECT {} FROM public.{}) x").format(
            sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(table)
        )
        out[table] = sorted(r[0] for r in conn.execute(query))
    return out


def tuple_versions(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, list[str]]:
    """Return each table's (ctid, xmin) pairs: any UPDATE or rewrite of a row changes them."""
    out = {}
    for table in tables:
        query = sql.SQL("SELECT ctid::text || '/' || xmin::text FROM public.{}").format(
            sql.Identifier(table)
        )
        out[table] = sorted(r[0] for r in conn.execute(query))
    return out


def runner_data(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Snapshot every table of the database as it stands (all are the runner's): rows,
    row versions, sequence positions, and the columns each table has now."""
    tables = public_tables(conn)
    columns = {t: [c[0] for c in columns_of(conn, t)] for t in tables}
    return {
        "columns": columns,
        "rows": table_rows(conn, columns),
        "versions": tuple_versions(conn, tables),
        "sequences": dict(
            conn.execute(
                "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'"
            ).fetchall()
        ),
    }


def assert_rows_kept(conn: psycopg.Connection[Any], before: dict[str, Any]) -> None:
    rows_now = table_rows(conn, before["columns"])
    for table, rows in before["rows"].items():
        assert rows_now[table] == rows, f"rows of {table} changed"


def psql_apply(dsn: str, script: str, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(script)
    done = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-o",
            "/dev/null",
            "-d",
            dsn,
            "-f",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"psql failed applying {name}:\n{done.stderr}"


def stop_blocker(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.rollback()
    finally:
        conn.close()


class CommittingCommandExecutor(CommandExecutor):
    """pytest-alembic's executor, ending the shared connection's transaction around each run.

    env.py runs on ``config.attributes["connection"]`` (a SQLAlchemy Connection), but alembic
    treats a connection already inside a transaction as an *external* transaction, and the
    revisions' ``autocommit_block`` then fails (``assert self._transaction is not None``).
    pytest-alembic leaves the connection inside the transaction that reading the current
    revision autobegan, so each run is bracketed by a commit here (see
    test_env_connection_attribute_works_with_plain_pytest_alembic_runner).
    """

    def _settle(self) -> None:
        connection = self.alembic_config.attributes["connection"]
        if connection.in_transaction():
            connection.commit()

    def _run_env(self, fn: Any, revision: str | None = None) -> None:
        self._settle()
        try:
            super()._run_env(fn, revision)
        finally:
            self._settle()

    def execute_fn(self, fn: Any) -> None:
        self._settle()
        try:
            super().execute_fn(fn)
        finally:
            self._settle()


def sqlalchemy_engine(dsn: str) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool
    )


# ---------------------------------------------------------------------------------------------
# History: pytest-alembic's built-in tests
# ---------------------------------------------------------------------------------------------


def test_single_head_revision():
    config = Config(alembic_config=migration.alembic_config())
    executor = CommandExecutor.from_config(config)
    runner = MigrationContext.from_config(config, executor, ConnectionExecutor(None))
    pa_single_head_revision(runner)
    assert runner.heads == [migration.head_revision()]
    assert runner.history.revisions[0] == "base"
    assert runner.history.revisions[1] == "0001"


def test_pytest_alembic_upgrade_and_up_down_consistency(empty_db):
    dsn = settle(empty_db)
    engine = sqlalchemy_engine(dsn)
    try:
        with engine.connect() as connection:
            config = Config(alembic_config=migration.alembic_config())
            executor = CommittingCommandExecutor.from_config(config)
            executor.configure(connection=connection)
            runner = MigrationContext.from_config(config, executor, ConnectionExecutor(connection))
            assert runner.current == "base"
            pa_upgrade(runner)
            assert runner.current == migration.head_revision()
            runner.migrate_down_to("base")
            assert runner.current == "base"
            pa_up_down_consistency(runner)
            # env.py's shared-connection path sets lock_timeout too.
            assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "5s"
    finally:
        engine.dispose()
    assert migration.current_revision(empty_db) == migration.head_revision()


def test_env_connection_attribute_works_with_plain_pytest_alembic_runner(empty_db):
    import pytest_alembic

    dsn = settle(empty_db)
    engine = sqlalchemy_engine(dsn)
    try:
        with engine.connect() as connection:
            config = Config(alembic_config=migration.alembic_config())
            with pytest_alembic.runner(config, connection) as runner:
                pa_upgrade(runner)
                assert runner.current == migration.head_revision()
            connection.rollback()
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# Baseline on an empty database
# ---------------------------------------------------------------------------------------------


def test_upgrade_empty_database_creates_exactly_the_runner_schema(empty_db):
    result = upgrade(empty_db, "0001")
    assert result == migration.UpgradeResult(before=None, after="0001")
    conn = empty_db

    assert public_tables(conn) == sorted(
        BASELINE_TABLES + ["alembic_version", "beaconsql_baseline_objects"]
    )
    assert columns_of(conn, "executions") == EXECUTIONS_RUNNER_COLUMNS
    assert [c[0] for c in columns_of(conn, "region_results")] == REGION_RESULTS_COLUMNS
    assert ("summary_source", "text", False, None) in columns_of(conn, "cross_region_analyses")

    indexes = {
        r[0]: (r[1], r[2])
        for r in conn.execute(
            "SELECT ic.relname, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
            "JOIN pg_class ic ON ic.oid = i.indexrelid "
            "WHERE i.indrelid = 'public.executions'::regclass"
        )
    }
    assert set(indexes) == EXECUTIONS_INDEXES
    assert all(valid for _, valid in indexes.values())
    assert indexes["idx_executions_status_retry"][0].endswith(
        "USING btree (status, retry_count) WHERE ((status)::text = ANY "
        "((ARRAY['failed'::character varying, 'timeout'::character varying, "
        "'error'::character varying])::text[]))"
    )
    assert indexes["idx_executions_dedup_with_question"][0].endswith(
        "USING btree (job_id, region, model_id, question_id)"
    )
    assert "UNIQUE" not in indexes["idx_executions_dedup_with_question"][0]

    constraints = dict(
        conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) || ' valid=' || convalidated "
            "FROM pg_constraint WHERE conname IN ('chk_executions_status', 'chk_jobs_status', "
            "'transparency_log_execution_id_fkey', 'executions_job_id_fkey', "
            "'executions_cross_region_execution_id_fkey', 'jobs_jobspec_id_key', "
            "'region_results_cross_region_execution_id_fkey')"
        ).fetchall()
    )
    assert constraints == {
        "chk_executions_status": CHK_EXECUTIONS_STATUS + " valid=true",
        "chk_jobs_status": CHK_JOBS_STATUS + " valid=true",
        "transparency_log_execution_id_fkey": "FOREIGN KEY (execution_id) REFERENCES "
        "executions(id) ON DELETE RESTRICT valid=true",
        "executions_job_id_fkey": "FOREIGN KEY (job_id) REFERENCES jobs(id) valid=true",
        "executions_cross_region_execution_id_fkey": "FOREIGN KEY (cross_region_execution_id) "
        "REFERENCES cross_region_executions(id) valid=true",
        "jobs_jobspec_id_key": "UNIQUE (jobspec_id) valid=true",
        "region_results_cross_region_execution_id_fkey": "FOREIGN KEY "
        "(cross_region_execution_id) REFERENCES cross_region_executions(id) ON DELETE CASCADE "
        "valid=true",
    }

    triggers = set(
        conn.execute(
            "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE NOT tgisinternal"
        ).fetchall()
    )
    assert triggers == {
        (
            "region_results",
            "update_region_results_updated_at",
            "CREATE TRIGGER update_region_results_updated_at BEFORE UPDATE ON "
            "public.region_results FOR EACH ROW EXECUTE FUNCTION update_updated_at_column()",
        ),
        (
            "cross_region_executions",
            "update_cross_region_executions_updated_at",
            "CREATE TRIGGER update_cross_region_executions_updated_at BEFORE UPDATE ON "
            "public.cross_region_executions FOR EACH ROW EXECUTE FUNCTION "
            "update_updated_at_column()",
        ),
        (
            "cross_region_analyses",
            "update_cross_region_analyses_updated_at",
            "CREATE TRIGGER update_cross_region_analyses_updated_at BEFORE UPDATE ON "
            "public.cross_region_analyses FOR EACH ROW EXECUTE FUNCTION update_updated_at_column()",
        ),
        (
            "transparency_log",
            "trigger_set_transparency_log_fields",
            "CREATE TRIGGER trigger_set_transparency_log_fields BEFORE INSERT ON "
            "public.transparency_log FOR EACH ROW EXECUTE FUNCTION set_transparency_log_fields()",
        ),
    }
    assert scalar(conn, "SELECT to_regclass('public.transparency_log_index_seq')::text") == (
        "transparency_log_index_seq"
    )
    assert [c[0] for c in columns_of(conn, "public_transparency_log")] == [
        "log_index",
        "job_id",
        "region",
        "provider_id",
        "status",
        "started_at",
        "completed_at",
        "output_hash",
        "receipt_hash",
        "ipfs_cid",
        "merkle_leaf_hash",
        "merkle_tree_root",
        "logged_at",
        "anchor_tx_hash",
        "anchor_block_number",
        "anchor_timestamp",
    ]

    # The created objects behave as the runner's: the CHECKs hold, the log numbers and chains.
    conn.execute("INSERT INTO jobs (id, jobspec_id, jobspec_data) VALUES (1, 'j', '{}')")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO jobs (jobspec_id, jobspec_data, status) VALUES ('k', '{}', 'x')")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO executions (job_id, provider_id, region, status) "
            "VALUES (1, '', 'US', 'retrying')"
        )
    conn.execute("INSERT INTO executions (id, job_id, provider_id, region) VALUES (7, 1, '', 'US')")
    for _ in range(2):
        conn.execute(
            "INSERT INTO transparency_log (execution_id, job_id, region, provider_id, status, "
            "merkle_leaf_hash) VALUES (7, 'j', 'US', '', 'completed', 'x')"
        )
    assert conn.execute(
        "SELECT log_index, merkle_leaf_hash, previous_log_hash FROM transparency_log "
        "ORDER BY log_index"
    ).fetchall() == [(1, "PLACEHOLDER_1", "0" * 64), (2, "PLACEHOLDER_2", "PLACEHOLDER_1")]
    assert conn.execute(
        "SELECT log_index, merkle_leaf_hash FROM public_transparency_log"
    ).fetchall() == [(1, "PLACEHOLDER_1"), (2, "PLACEHOLDER_2")]
    # ON DELETE RESTRICT: SQLSTATE 23503 up to PostgreSQL 17, 23001 from 18 on.
    with pytest.raises((psycopg.errors.ForeignKeyViolation, psycopg.errors.RestrictViolation)):
        conn.execute("DELETE FROM executions WHERE id = 7")


def test_upgrade_empty_database_to_head_adds_the_mirror_and_the_view(empty_db):
    upgrade(empty_db)
    conn = empty_db
    assert migration.current_revision(conn) == migration.head_revision()
    assert [c[0] for c in columns_of(conn, "executions")] == (
        [c[0] for c in EXECUTIONS_RUNNER_COLUMNS] + MIRROR_COLUMNS
    )
    # The runner's 26 columns keep their definitions; the link and the evidence level follow.
    assert columns_of(conn, "executions")[:26] == EXECUTIONS_RUNNER_COLUMNS
    assert columns_of(conn, "executions")[26][1] == "uuid"
    unique = scalar(
        conn,
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = 'public.executions'::regclass AND i.indisunique "
        "AND i.indisvalid AND pg_get_indexdef(i.indexrelid) LIKE '%mirror_region_result_id%'",
    )
    assert unique is not None
    assert "(mirror_region_result_id, model_id, question_id) NULLS NOT DISTINCT" in unique
    assert unique.endswith("WHERE (mirror_region_result_id IS NOT NULL)")
    assert scalar(conn, "SELECT to_regclass('public.executions_unified') IS NOT NULL")
    # Every executions index of the runner is still there, plus the mirror's one.
    assert EXECUTIONS_INDEXES <= {
        r[0]
        for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'executions'")
    }


def test_baseline_schema_equals_the_runner_migrations_schema(empty_db, runner_db):
    """Six tables created on an empty database == the same tables built by the runner's own
    migrations (columns, constraints, indexes, triggers), cross_region_analyses.summary_source
    aside (runner-app.md 1.5: no runner migration creates it)."""
    upgrade(empty_db, "0001")
    created = schema_objects(empty_db, BASELINE_TABLES)
    runner = schema_objects(runner_db, BASELINE_TABLES)
    only_created = {k: v for k, v in created.items() if runner.get(k) != v}
    only_runner = {k: v for k, v in runner.items() if created.get(k) != v}
    assert only_created == {
        ("column", "cross_region_analyses", "summary_source"): ("text", False, None)
    }
    assert only_runner == {}
    for table in BASELINE_TABLES:
        assert [c[0] for c in columns_of(empty_db, table) if c[0] != "summary_source"] == [
            c[0] for c in columns_of(runner_db, table)
        ], f"column order of {table}"
    view = "SELECT pg_get_viewdef('public.public_transparency_log'::regclass)"
    assert scalar(empty_db, view) == scalar(runner_db, view)
    sequences = (
        "SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, "
        "       s.seqmax, s.seqcache, s.seqcycle, "
        "       (SELECT a.attrelid::regclass::text || '.' || a.attname FROM pg_depend d "
        "        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "        WHERE d.objid = c.oid AND d.deptype = 'a') "
        "FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid "
        "WHERE c.relname IN ('jobs_id_seq', 'executions_id_seq', 'transparency_log_id_seq', "
        "                    'transparency_log_index_seq') ORDER BY 1"
    )
    created_sequences = empty_db.execute(sequences).fetchall()
    assert len(created_sequences) == 4
    assert created_sequences == runner_db.execute(sequences).fetchall()
    triggers_and_functions = (
        "SELECT t.tgname, p.proname, p.prorettype::regtype::text, l.lanname "
        "FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_language l "
        "ON l.oid = p.prolang WHERE NOT t.tgisinternal AND t.tgrelid = ANY(%s::regclass[]) "
        "ORDER BY 1"
    )
    tables = [f"public.{t}" for t in BASELINE_TABLES]
    assert empty_db.execute(triggers_and_functions, (tables,)).fetchall() == (
        runner_db.execute(triggers_and_functions, (tables,)).fetchall()
    )


# ---------------------------------------------------------------------------------------------
# Adoption of a database the runner built
# ---------------------------------------------------------------------------------------------

RUNNER_VARIANTS = ["runner_db", "runner_db_without_007", "runner_db_inline"]


@pytest.mark.parametrize("variant", RUNNER_VARIANTS)
def test_upgrade_adopts_runner_database_without_touching_its_rows_or_objects(request, variant):
    conn = request.getfixturevalue(variant)
    data = runner_data(conn)
    objects = schema_objects(conn)
    executions_before = scalar(conn, "SELECT count(*) FROM executions")

    result = upgrade(conn)

    assert result == migration.UpgradeResult(before=None, after=migration.head_revision())
    assert scalar(conn, "SELECT count(*) FROM executions") == executions_before
    assert_rows_kept(conn, data)
    assert tuple_versions(conn, list(data["columns"])) == data["versions"], "rows were rewritten"
    sequences = dict(
        conn.execute(
            "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'"
        ).fetchall()
    )
    assert {k: sequences.get(k) for k in data["sequences"]} == data["sequences"]
    assert changed_objects(objects, schema_objects(conn)) == {}
    # What every adoption adds.
    assert ("summary_source", "text", False, None) in columns_of(conn, "cross_region_analyses")
    assert ("question_id", "character varying(255)", False, None) in columns_of(conn, "executions")
    assert {c[0] for c in columns_of(conn, "executions")} >= {
        c[0] for c in EXECUTIONS_RUNNER_COLUMNS
    } | set(MIRROR_COLUMNS)
    assert (
        scalar(conn, "SELECT count(*) FROM executions WHERE mirror_region_result_id IS NOT NULL")
        == 0
    )


def test_adopting_runner_database_without_007_adds_question_id_and_its_index(
    runner_db_without_007,
):
    conn = runner_db_without_007
    assert "question_id" not in [c[0] for c in columns_of(conn, "executions")]
    upgrade(conn)
    assert ("question_id", "character varying(255)", False, None) in columns_of(conn, "executions")
    assert scalar(conn, "SELECT count(*) FROM executions WHERE question_id IS NOT NULL") == 0
    assert scalar(
        conn, "SELECT pg_get_indexdef('public.idx_executions_dedup_with_question'::regclass)"
    ).endswith("USING btree (job_id, region, model_id, question_id)")
    assert {
        r[0]
        for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'executions'")
    } >= EXECUTIONS_INDEXES
    # Recorded as created (so a downgrade may drop it); the column is adopted, never recorded.
    assert conn.execute(
        "SELECT object_type, object_name FROM beaconsql_baseline_objects ORDER BY id"
    ).fetchall() == [("index", "idx_executions_dedup_with_question")]


def test_adopting_migrations_built_runner_database_records_nothing_as_created(runner_db):
    upgrade(runner_db, "0001")
    assert scalar(runner_db, "SELECT count(*) FROM beaconsql_baseline_objects") == 0
    assert (
        scalar(
            runner_db,
            "SELECT convalidated FROM pg_constraint WHERE conname = 'chk_executions_status'",
        )
        is True
    )


def test_adopting_inline_fallback_database_adds_what_is_missing_and_reports_bad_rows(
    runner_db_inline, caplog
):
    conn = runner_db_inline
    row_304 = scalar(conn, "SELECT to_jsonb(e)::text FROM executions e WHERE id = 304")
    assert json.loads(row_304)["status"] == "retrying"

    with caplog.at_level(logging.INFO, logger="beaconsql.migration"):
        upgrade(conn)

    assert set(public_tables(conn)) >= set(BASELINE_TABLES) | {"ipfs_bundles", "diffs", "outbox"}
    assert columns_of(conn, "executions")[:12] == EXECUTIONS_RUNNER_COLUMNS[:12]
    names = [c[0] for c in columns_of(conn, "executions")]
    for column in EXECUTIONS_RUNNER_COLUMNS:
        assert column in columns_of(conn, "executions"), column[0]
    assert names[12:17] == [
        "region_claimed",
        "region_observed",
        "region_verified",
        "verification_method",
        "preflight_evidence_ref",
    ]
    assert ("summary_source", "text", False, None) in columns_of(conn, "cross_region_analyses")
    assert [c[0] for c in columns_of(conn, "region_results")] == REGION_RESULTS_COLUMNS
    assert conn.execute(
        "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint "
        "WHERE conrelid = 'public.executions'::regclass AND conname = 'chk_executions_status'"
    ).fetchall() == [(CHK_EXECUTIONS_STATUS + " NOT VALID", False)]
    # The violating row is kept as it was (its runner columns; the adopted ones got defaults).
    before = json.loads(row_304)
    after = json.loads(scalar(conn, "SELECT to_jsonb(e)::text FROM executions e WHERE id = 304"))
    assert {k: after[k] for k in before} == before
    # New writes are checked.
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE executions SET status = 'retrying' WHERE id = 305")
    # The upgrade reports the violating rows.
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "beaconsql.migration" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert "chk_executions_status" in warnings[0]
    assert "1 executions rows violate it" in warnings[0]
    assert "304:retrying" in warnings[0]


def make_unadoptable(conn: psycopg.Connection[Any], problems: list[str]) -> None:
    settle(conn)
    if "job_id" in problems:
        conn.execute("ALTER TABLE executions DROP CONSTRAINT executions_job_id_fkey")
        conn.execute(
            "ALTER TABLE executions ALTER COLUMN job_id TYPE varchar(100) USING job_id::text"
        )
    if "execution_output" in problems:
        conn.execute("ALTER TABLE region_results DROP COLUMN execution_output")


@pytest.mark.parametrize(
    "problems, expected",
    [
        (
            ["job_id", "execution_output"],
            [
                "executions.job_id is character varying(100) (expected integer)",
                "region_results.execution_output is missing (expected jsonb)",
            ],
        ),
        (
            ["execution_output"],
            ["region_results.execution_output is missing (expected jsonb)"],
        ),
    ],
)
def test_upgrade_refuses_unadoptable_database_naming_each_column_and_changes_nothing(
    runner_db, problems, expected
):
    conn = runner_db
    make_unadoptable(conn, problems)
    data = runner_data(conn)
    objects = schema_objects(conn)
    # Roles are the cluster's: those of tests running beside this one (bq_*) come and go.
    roles_query = "SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'bq\\_%' ORDER BY 1"
    roles = conn.execute(roles_query).fetchall()

    with pytest.raises(MigrationError) as failure:
        upgrade(conn)

    message = str(failure.value)
    assert "cannot adopt" in message
    for text in expected:
        assert text in message
    assert ("job_id" in message) == ("job_id" in problems)
    assert scalar(conn, "SELECT to_regclass('public.beaconsql_baseline_objects')") is None
    assert scalar(conn, "SELECT to_regclass('public.alembic_version')") is None
    assert migration.current_revision(conn) is None
    assert schema_objects(conn) == objects
    assert_rows_kept(conn, data)
    assert tuple_versions(conn, list(data["columns"])) == data["versions"]
    assert conn.execute(roles_query).fetchall() == roles


# ---------------------------------------------------------------------------------------------
# Downgrades
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    [
        "runner_db",
        "runner_db_without_007",
        "runner_db_inline",
    ],
)
def test_upgrade_downgrade_base_upgrade_keeps_every_runner_row_and_object(request, variant):
    conn = request.getfixturevalue(variant)
    data = runner_data(conn)
    objects = schema_objects(conn)
    roles = conn.execute("SELECT oid, rolname FROM pg_roles ORDER BY 1").fetchall()

    upgrade(conn)
    assert_rows_kept(conn, data)
    downgrade(conn, "base")

    assert migration.current_revision(conn) is None
    assert_rows_kept(conn, data)
    now = schema_objects(conn)
    assert changed_objects(objects, now) == {}
    # What is left beyond the runner's own objects: only the columns adoption added.
    left = {k for k in now if k not in objects}
    assert {k for k in left if k[0] != "column"} <= {
        ("table", "alembic_version"),
        ("column", "alembic_version", "version_num"),
        ("constraint", "alembic_version", "alembic_version_pkc"),
        ("index", "alembic_version", "alembic_version_pkc"),
    }
    assert {(k[1], k[2]) for k in left if k[0] == "column" and k[1] != "alembic_version"} <= (
        ADOPTABLE_COLUMNS
    )
    assert ("column", "executions", "mirror_region_result_id") not in now
    # Adopted columns are never dropped, since the runner writes them.
    assert now[("column", "executions", "question_id")] == ("character varying(255)", False, None)
    if ("table", "cross_region_analyses") in objects:  # adopted; the inline variant had none
        assert now[("column", "cross_region_analyses", "summary_source")] == ("text", False, None)
    else:
        assert ("table", "cross_region_analyses") not in now

    upgrade(conn)
    assert migration.current_revision(conn) == migration.head_revision()
    assert_rows_kept(conn, data)
    assert changed_objects(objects, schema_objects(conn)) == {}
    # Revisions never create or drop roles.
    assert conn.execute("SELECT oid, rolname FROM pg_roles ORDER BY 1").fetchall() == roles


def test_downgrade_base_on_inline_fallback_database_drops_only_what_it_created(runner_db_inline):
    conn = runner_db_inline
    data = runner_data(conn)
    upgrade(conn)
    downgrade(conn, "base")
    assert_rows_kept(conn, data)
    assert migration.current_revision(conn) is None
    tables = {
        r[0]
        for r in conn.execute(
            "SELECT relname FROM pg_class "
            "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        )
    }
    # The tables the baseline created are gone; the adopted ones keep the columns it added.
    assert not tables & {
        "cross_region_executions",
        "region_results",
        "cross_region_analyses",
        "transparency_log",
    }
    assert {"jobs", "executions"} <= tables
    assert ("question_id",) in conn.execute(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = 'executions'::regclass"
    ).fetchall()
    upgrade(conn)
    assert_rows_kept(conn, data)


def test_failed_baseline_downgrade_message_names_the_blocking_object(empty_db):
    conn = empty_db
    upgrade(conn)
    downgrade(conn, "0001")
    conn.execute("CREATE VIEW someone_elses_jobs AS SELECT id, status FROM jobs")
    conn.commit()
    with pytest.raises(MigrationError) as failure:
        downgrade(conn, "base")
    message = str(failure.value)
    assert "someone_elses_jobs" in message
    assert "CASCADE" not in message
    assert migration.current_revision(conn) == "0001"


def test_downgrade_base_refuses_while_created_tables_hold_runner_rows(empty_db):
    conn = empty_db
    upgrade(conn)
    load_fixture(conn, "history.sql", "history_question_ids.sql")
    runner_columns = {t: [c[0] for c in columns_of(conn, t)] for t in BASELINE_TABLES}
    runner_columns["executions"] = [c[0] for c in EXECUTIONS_RUNNER_COLUMNS]
    direct = table_rows(conn, {"executions": runner_columns["executions"]})
    direct_only = sorted(
        r[0]
        for r in conn.execute(
            sql.SQL(
                "SELECT to_jsonb(x)::text FROM (SELECT {} FROM executions "
                "WHERE mirror_region_result_id IS NULL) x"
            ).format(sql.SQL(", ").join(map(sql.Identifier, runner_columns["executions"])))
        )
    )
    assert len(direct_only) == 13 and len(direct["executions"]) >= 13
    others = table_rows(conn, {t: c for t, c in runner_columns.items() if t != "executions"})

    with pytest.raises(MigrationError) as failure:
        downgrade(conn, "base")

    message = str(failure.value)
    for table, count in [
        ("jobs", 5),
        ("executions", 13),
        ("cross_region_executions", 6),
        ("region_results", 8),
        ("cross_region_analyses", 1),
        ("transparency_log", 1),
    ]:
        assert f"{table} ({count} rows)" in message, table
    # Nothing lost: the runner's rows and the baseline's objects are all still there.
    assert migration.current_revision(conn) == "0001"
    assert table_rows(conn, {"executions": runner_columns["executions"]})["executions"] == (
        direct_only
    )
    assert table_rows(conn, {t: c for t, c in runner_columns.items() if t != "executions"}) == (
        others
    )
    assert scalar(conn, "SELECT count(*) FROM beaconsql_baseline_objects") > 40
    upgrade(conn)
    assert migration.current_revision(conn) == migration.head_revision()


def test_downgrade_base_on_empty_database_removes_everything_the_baseline_created(empty_db):
    conn = empty_db
    upgrade(conn)
    downgrade(conn, "base")
    assert migration.current_revision(conn) is None
    assert conn.execute(
        "SELECT relname, relkind::text FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace ORDER BY 1"
    ).fetchall() == [("alembic_version", "r"), ("alembic_version_pkc", "i")]
    assert (
        scalar(conn, "SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace")
        == 0
    )
    assert (
        scalar(
            conn,
            "SELECT count(*) FROM pg_type WHERE typnamespace = 'public'::regnamespace "
            "AND typname NOT IN ('alembic_version', '_alembic_version')",
        )
        == 0
    )
    assert scalar(conn, "SELECT count(*) FROM alembic_version") == 0


def test_downgrade_mirror_deletes_mirrored_rows_detaches_logged_ones_keeps_direct_rows(runner_db):
    conn = runner_db
    upgrade(conn, "0001")
    at_0001 = schema_objects(conn)
    upgrade(conn)
    runner_cols = [c[0] for c in EXECUTIONS_RUNNER_COLUMNS]
    direct = table_rows(conn, {"executions": runner_cols})["executions"]
    assert len(direct) == 13
    conn.execute("UPDATE region_results SET metadata = metadata")  # mirror every region result
    mirrored = conn.execute(
        "SELECT id FROM executions WHERE mirror_region_result_id IS NOT NULL ORDER BY id"
    ).fetchall()
    assert len(mirrored) > 10
    logged = scalar(
        conn,
        "SELECT min(id) FROM executions WHERE mirror_region_result_id IS NOT NULL "
        "AND job_id IS NOT NULL",
    )
    conn.execute(
        "INSERT INTO transparency_log (execution_id, job_id, region, provider_id, status, "
        "merkle_leaf_hash) SELECT id, 'bias-detection-1760288315095', region, provider_id, "
        "status, 'x' FROM executions WHERE id = %s",
        (logged,),
    )
    logged_row = scalar(
        conn,
        sql.SQL("SELECT to_jsonb(x)::text FROM (SELECT {} FROM executions WHERE id = %s) x").format(
            sql.SQL(", ").join(map(sql.Identifier, runner_cols))
        ),
        (logged,),
    )
    region_rows = table_rows(conn, {"region_results": REGION_RESULTS_COLUMNS})

    downgrade(conn, "0001")

    assert migration.current_revision(conn) == "0001"
    assert sorted(table_rows(conn, {"executions": runner_cols})["executions"]) == sorted(
        direct + [logged_row]
    )
    assert table_rows(conn, {"region_results": REGION_RESULTS_COLUMNS}) == region_rows
    assert scalar(conn, "SELECT count(*) FROM transparency_log") == 2
    # Nothing of the mirror is left: the schema is the one revision 0001 left.
    assert schema_objects(conn) == at_0001


# ---------------------------------------------------------------------------------------------
# Objects beaconsql does not own
# ---------------------------------------------------------------------------------------------


def test_downgrade_of_the_view_stops_when_someone_elses_view_depends_on_it(migrated_db):
    conn = migrated_db
    settle(conn)
    conn.execute("CREATE VIEW portal_dashboard AS SELECT job_id, status FROM executions_unified")
    with pytest.raises(MigrationError):
        downgrade(conn, "0002")
    assert migration.current_revision(conn) == "0003"  # the view's revision was not undone
    assert scalar(conn, "SELECT to_regclass('public.portal_dashboard') IS NOT NULL")
    assert scalar(conn, "SELECT to_regclass('public.executions_unified') IS NOT NULL")


def test_failed_downgrade_message_names_the_dependent_view(migrated_db):
    conn = migrated_db
    settle(conn)
    conn.execute("CREATE VIEW portal_dashboard AS SELECT job_id, status FROM executions_unified")
    with pytest.raises(MigrationError) as failure:
        downgrade(conn, "0002")
    assert "portal_dashboard" in str(failure.value)


def test_revisions_never_drop_with_cascade_nor_touch_roles():
    texts = {
        path.relative_to(REPO): path.read_text()
        for path in [*(REPO / "sql").rglob("*.sql"), *(REPO / "migrations").rglob("*.py")]
    }
    assert texts
    for path, text in texts.items():
        code = re.sub(r"--[^\n]*", "", text)
        assert not re.search(r"\bDROP\b[^;]*\bCASCADE\b", code, re.I), path
        assert not re.search(r"\b(CREATE|DROP|ALTER)\s+(ROLE|USER|GROUP)\b", code, re.I), path


# ---------------------------------------------------------------------------------------------
# Offline SQL (alembic upgrade head --sql)
# ---------------------------------------------------------------------------------------------


def offline_script(dsn: str) -> str:
    script = migration.upgrade(dsn, sql=True)
    assert isinstance(script, str)
    return script


def test_offline_script_yields_the_same_objects_as_an_online_upgrade(
    empty_db, migrated_db, tmp_path
):
    dsn = settle(empty_db)
    script = offline_script(dsn)
    # lock_timeout (at most 5 s) is set before the first revision runs.
    match = re.search(r"SET lock_timeout = '(\d+)s';", script)
    assert match and int(match.group(1)) <= 5
    assert match.start() < script.index("BEGIN;")
    assert "Offline mode cannot detect an INVALID index" in script
    # Index builds on executions / region_results run CONCURRENTLY outside any transaction.
    in_transaction = False
    built = set()
    for line in script.splitlines():
        if line.strip() == "BEGIN;":
            in_transaction = True
        elif line.strip() == "COMMIT;":
            in_transaction = False
        else:
            found = re.match(
                r"CREATE (?:UNIQUE )?INDEX (?:CONCURRENTLY )?(?:IF NOT EXISTS )?(\w+) "
                r"ON public\.(?:executions|region_results) ",
                line,
            )
            if found:
                built.add(found.group(1))
                assert "CONCURRENTLY" in line and not in_transaction, line
    assert built >= (EXECUTIONS_INDEXES - {"executions_pkey"}) | {
        "idx_region_results_cross_region_execution_id",
        "idx_region_results_model_region",
    }
    assert any("mirror" in name for name in built)
    # `alembic upgrade head --sql` (the repository's alembic.ini) writes the same script.
    cli = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head", "--sql"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == script

    psql_apply(dsn, script, tmp_path, "upgrade.sql")

    settle(migrated_db)
    online = schema_objects(migrated_db)
    offline = schema_objects(empty_db)
    assert {k: v for k, v in offline.items() if online.get(k) != v} == {}
    assert {k: v for k, v in online.items() if offline.get(k) != v} == {}
    for table in public_tables(migrated_db):
        assert columns_of(empty_db, table) == columns_of(migrated_db, table), table
    record = (
        "SELECT object_type, object_name, table_name FROM beaconsql_baseline_objects ORDER BY id"
    )
    assert empty_db.execute(record).fetchall() == migrated_db.execute(record).fetchall()
    assert migration.current_revision(empty_db) == migration.head_revision()


def test_offline_script_adopts_a_runner_database(runner_db, tmp_path):
    conn = runner_db
    data = runner_data(conn)
    objects = schema_objects(conn)
    dsn = settle(conn)
    psql_apply(dsn, offline_script(dsn), tmp_path, "upgrade.sql")
    assert migration.current_revision(conn) == migration.head_revision()
    assert_rows_kept(conn, data)
    assert tuple_versions(conn, list(data["columns"])) == data["versions"]
    assert changed_objects(objects, schema_objects(conn)) == {}
    assert ("summary_source", "text", False, None) in columns_of(conn, "cross_region_analyses")
    assert scalar(conn, "SELECT count(*) FROM beaconsql_baseline_objects") == 0
    assert scalar(conn, "SELECT to_regclass('public.executions_unified') IS NOT NULL")
    # The mirror is live after an offline upgrade too.
    conn.execute(
        "UPDATE region_results SET metadata = metadata "
        "WHERE id = 'dddddddd-0000-4000-8000-0000000000d1'"
    )
    assert (
        scalar(
            conn,
            "SELECT count(*) FROM executions "
            "WHERE mirror_region_result_id = 'dddddddd-0000-4000-8000-0000000000d1'",
        )
        == 1
    )


def test_offline_downgrade_script_drops_only_what_the_baseline_created(
    runner_db_without_007, tmp_path
):
    conn = runner_db_without_007
    data = runner_data(conn)
    objects = schema_objects(conn)
    upgrade(conn)
    dsn = settle(conn)
    script = migration.downgrade(dsn, f"{migration.head_revision()}:base", sql=True)
    assert isinstance(script, str)
    psql_apply(dsn, script, tmp_path, "downgrade.sql")
    assert migration.current_revision(conn) is None
    assert_rows_kept(conn, data)
    now = schema_objects(conn)
    assert changed_objects(objects, now) == {}
    # The index the baseline built (recorded) is gone; the adopted column stays.
    assert ("index", "executions", "idx_executions_dedup_with_question") not in now
    assert ("column", "executions", "question_id") in now
    assert ("table", "beaconsql_baseline_objects") not in now
    assert not [k for k in now if "mirror" in k[-1] or k[-1] == "executions_unified"]


# ---------------------------------------------------------------------------------------------
# Locks
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_lock_timeout_stops_the_mirror_revision_after_three_attempts_then_rerun_succeeds(
    runner_db, caplog
):
    conn = runner_db
    upgrade(conn, "0001")
    dsn = dsn_of(conn)
    blocker = psycopg.connect(dsn)
    try:
        blocker.execute("LOCK TABLE region_results IN ROW EXCLUSIVE MODE")
        pid = blocker.info.backend_pid
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="beaconsql.migration"):
            with pytest.raises(MigrationError) as failure:
                migration.upgrade(dsn)
        elapsed = time.monotonic() - started
        message = str(failure.value)
        assert elapsed < 60
        assert f"after {migration.LOCK_ATTEMPTS} attempts" in message
        assert migration.LOCK_ATTEMPTS <= 3
        assert "lock_timeout=5s" in message
        # What it waited for: the statement (file) and the session holding the lock.
        assert "mirror/triggers/create.v1.sql" in message
        assert f"pid {pid} holds RowExclusiveLock on region_results" in message
        retries = [r for r in caplog.records if "retrying" in r.getMessage()]
        assert len(retries) == migration.LOCK_ATTEMPTS - 1
        assert migration.current_revision(conn) == "0001"
        assert (
            scalar(
                conn,
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.region_results'::regclass "
                "AND NOT tgisinternal",
            )
            == 1
        )
    finally:
        stop_blocker(blocker)
    assert migration.upgrade(dsn) == migration.UpgradeResult(
        before="0001", after=migration.head_revision()
    )


@pytest.mark.parametrize(
    "start, target, lock",
    [
        (None, "0001", "LOCK TABLE region_results IN ACCESS EXCLUSIVE MODE"),
        ("0002", "0003", "LOCK TABLE executions IN ACCESS EXCLUSIVE MODE"),
    ],
)
def test_every_revision_runs_with_lock_timeout(runner_db, monkeypatch, start, target, lock):
    conn = runner_db
    if start:
        upgrade(conn, start)
    dsn = settle(conn)
    monkeypatch.setattr(migration, "LOCK_ATTEMPTS", 1)  # env.py reads it at each run
    blocker = psycopg.connect(dsn)
    try:
        blocker.execute(lock)
        started = time.monotonic()
        with pytest.raises(MigrationError) as failure:
            migration.upgrade(dsn, target)
        assert time.monotonic() - started < 30
        assert "lock_timeout=5s" in str(failure.value)
        assert f"pid {blocker.info.backend_pid}" in str(failure.value)
    finally:
        stop_blocker(blocker)
    assert migration.current_revision(conn) == start


def test_revision_failing_on_a_lock_is_finished_by_a_rerun_and_blocks_downgrade_until_then(
    runner_db, monkeypatch
):
    conn = runner_db
    upgrade(conn, "0001")
    dsn = settle(conn)
    monkeypatch.setattr(migration, "LOCK_ATTEMPTS", 1)
    blocker = psycopg.connect(dsn)
    try:
        blocker.execute("LOCK TABLE region_results IN ROW EXCLUSIVE MODE")
        with pytest.raises(MigrationError):
            migration.upgrade(dsn)
    finally:
        stop_blocker(blocker)
    # 0002 committed its autocommit part (columns, tables, the concurrent index) before the
    # trigger lock timed out: the revision is not stamped, and the baseline's downgrade refuses
    # to strand those objects.
    assert migration.current_revision(conn) == "0001"
    with pytest.raises(MigrationError, match="revision 0002"):
        migration.downgrade(dsn, "base")
    assert migration.current_revision(conn) == "0001"
    # A rerun finishes it; then the full downgrade works.
    migration.upgrade(dsn)
    assert migration.current_revision(conn) == migration.head_revision()
    migration.downgrade(dsn, "base")
    assert migration.current_revision(conn) is None


def test_lock_timeout_message_names_the_session_holding_cross_region_analyses(
    runner_db, monkeypatch
):
    conn = runner_db
    dsn = settle(conn)
    monkeypatch.setattr(migration, "LOCK_ATTEMPTS", 1)
    blocker = psycopg.connect(dsn)
    try:
        # The runner inserting an analysis, its transaction still open.
        blocker.execute("LOCK TABLE cross_region_analyses IN ROW EXCLUSIVE MODE")
        with pytest.raises(MigrationError) as failure:
            migration.upgrade(dsn)
        message = str(failure.value)
        assert "lock_timeout=5s" in message
        assert (
            f"pid {blocker.info.backend_pid} holds RowExclusiveLock on cross_region_analyses"
            in (message)
        )
    finally:
        stop_blocker(blocker)


def test_online_upgrade_rebuilds_an_index_an_interrupted_concurrent_build_left_invalid(
    runner_db, migrated_db
):
    conn = runner_db
    settle(conn)
    # A runner index an interrupted build left INVALID (it failed on a row it could not index).
    conn.execute("DROP INDEX idx_executions_job_id")
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute(
            "CREATE INDEX CONCURRENTLY idx_executions_job_id ON executions ((1 / (id - 201)))"
        )
    upgrade(conn, "0001")
    # An interrupted revision 0002 run: its columns committed, its unique index build failed.
    for part in ("rule/executions_mirror_types.v1.sql", "apply/tables.v1.sql"):
        conn.execute((REPO / "sql" / "mirror" / part).read_text())
    conn.execute(
        "INSERT INTO executions (id, provider_id, region, model_id, question_id, "
        "mirror_region_result_id) VALUES "
        "(9001, '', 'US', 'm', 'q', 'dddddddd-0000-4000-8000-0000000000a1'), "
        "(9002, '', 'US', 'm', 'q', 'dddddddd-0000-4000-8000-0000000000a1')"
    )
    build = next(
        line
        for line in (REPO / "sql" / "mirror" / "apply" / "indexes.v1.sql").read_text().splitlines()
        if line.startswith("CREATE UNIQUE INDEX CONCURRENTLY")
    )
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(build)
    assert (
        scalar(
            conn,
            "SELECT indisvalid FROM pg_index "
            "WHERE indexrelid = 'executions_mirror_pair_key'::regclass",
        )
        is False
    )
    conn.execute("DELETE FROM executions WHERE id IN (9001, 9002)")

    upgrade(conn)

    reference = "SELECT pg_get_indexdef(%s::regclass)"
    for name in ["executions_mirror_pair_key", "idx_executions_job_id"]:
        assert (
            scalar(conn, "SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass", (name,))
            is True
        ), name
        assert scalar(conn, reference, (name,)) == scalar(migrated_db, reference, (name,)), name


# ---------------------------------------------------------------------------------------------
# Lock safety under load: upgrade 0001 -> head while writers keep writing
# ---------------------------------------------------------------------------------------------

LOCK_MODELS = ("m1", "m2")
LOCK_QUESTIONS = ("q1", "q2")
LOCK_REGIONS = ("US", "EU")


def runner_finish_region(conn: psycopg.Connection[Any], region_id: uuid.UUID) -> None:
    """The runner's own final region_results UPDATE (runner-app.md section 2.4)."""
    conn.execute(
        "UPDATE region_results SET status = 'success', completed_at = now(), "
        "duration_ms = 12000, error_message = '', "
        'metadata = \'{"success_count": 4, "failure_count": 0, "total_executions": 4}\' '
        "WHERE id = %s",
        (region_id,),
    )


def runner_direct_insert(
    conn: psycopg.Connection[Any], job_id: int, region: str, model_id: str, question_id: str
) -> None:
    """The runner's dual write of one pair: a direct executions row."""
    conn.execute(
        "INSERT INTO executions (job_id, provider_id, region, model_id, question_id, status, "
        "started_at, completed_at, created_at, output_data) "
        "VALUES (%s, %s, %s, %s, %s, 'completed', now() AT TIME ZONE 'UTC', "
        "now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', %s)",
        (
            job_id,
            seed.PROVIDERS[region],
            region,
            model_id,
            question_id,
            Jsonb(seed.answer(model_id, question_id, region)),
        ),
    )


def test_upgrade_from_0001_to_head_under_writer_load_blocks_no_writer_beyond_lock_timeout(
    empty_db: psycopg.Connection[Any],
) -> None:
    """A database at revision 0001 holding history (legacy region results and the runner's
    direct rows); three threads record runs, one statement per transaction (writer calls, the
    runner's own finish UPDATE until the upgrade is done, writer.finish_region after, and one
    direct ``INSERT INTO executions`` per run), before, during and after
    ``migration.upgrade(dsn)``. Every statement completes without error, none waits longer than
    the lock timeout + margin (< 10 s), the upgrade completes (or fails fast and a rerun
    completes), and afterwards ``beaconsql backfill`` then ``beaconsql verify`` exit 0 and
    executions equals the rule."""
    empty_db.commit()
    empty_db.autocommit = True
    dsn = dsn_of(empty_db)
    migration.upgrade(dsn, "0001")
    write_bulk_legacy(empty_db, "hist", 1500)
    # The runner's dual write of history: for a third of the jobs, its 9 direct rows in US.
    empty_db.execute(
        "INSERT INTO executions (job_id, provider_id, region, model_id, question_id, status, "
        "started_at, completed_at, created_at) "
        "SELECT j.id, 'modal-us-east', 'US', m, q, 'completed', j.created_at, j.created_at, "
        "j.created_at FROM jobs j, "
        "unnest(ARRAY['llama3.2-1b', 'mistral-7b', 'qwen2.5-1.5b']) m, "
        "unnest(ARRAY['greatest_invention', 'tiananmen_neutral', 'taiwan_status']) q "
        "WHERE j.id % 3 = 0"
    )

    stop = threading.Event()
    upgraded = threading.Event()
    errors: list[tuple[str, BaseException]] = []
    timings: list[tuple[str, float, float]] = []  # (label, start, end)
    runs_done = [0, 0, 0]

    def timed(label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            timings.append((label, start, time.monotonic()))

    def recorder(k: int) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                n = 0
                while not stop.is_set():
                    spec = seed.jobspec(
                        f"lock-{k}-{n}",
                        regions=LOCK_REGIONS,
                        models=LOCK_MODELS,
                        questions=LOCK_QUESTIONS,
                    )
                    job_id = timed("create_job", writer.create_job, conn, spec)
                    run_id = timed(
                        "start_run", writer.start_run, conn, spec["id"], regions=LOCK_REGIONS
                    )
                    for region in LOCK_REGIONS:
                        rid = timed(
                            "start_region",
                            writer.start_region,
                            conn,
                            run_id,
                            region,
                            provider_id=seed.PROVIDERS[region],
                        )
                        for m in LOCK_MODELS:
                            for q in LOCK_QUESTIONS:
                                timed(
                                    "record_pair",
                                    writer.record_pair,
                                    conn,
                                    rid,
                                    model_id=m,
                                    question_id=q,
                                    status="completed",
                                    output=seed.answer(m, q, region),
                                )
                        if upgraded.is_set():
                            timed("finish_region", writer.finish_region, conn, rid)
                        else:
                            timed("runner_finish_region", runner_finish_region, conn, rid)
                    timed("finish_run", writer.finish_run, conn, run_id)
                    timed("direct_insert", runner_direct_insert, conn, job_id, "US", "m1", "q2")
                    n += 1
                    runs_done[k] = n
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append((f"writer {k}", exc))

    threads = [threading.Thread(target=recorder, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while min(runs_done) < 2 and not errors:
            assert time.monotonic() < deadline, runs_done
            time.sleep(0.01)
        up_start = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            started = time.monotonic()
            try:
                result = migration.upgrade(dsn)
                break
            except MigrationError as exc:
                # Allowed: a fast failure naming what it waited for, then a clean rerun.
                assert time.monotonic() - started < 60, exc
                assert "lock" in str(exc), exc
                assert attempts < 2, exc
        up_end = time.monotonic()
        upgraded.set()
        before = list(runs_done)
        deadline = time.monotonic() + 30
        while min(r - b for r, b in zip(runs_done, before, strict=True)) < 2 and not errors:
            assert time.monotonic() < deadline, runs_done
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == [], errors
    assert isinstance(result, migration.UpgradeResult)
    assert result.after == migration.head_revision()

    latencies = [end - start for _, start, end in timings]
    during = [1 for _, start, end in timings if start < up_end and end > up_start]
    worst = max(zip(latencies, (label for label, _, _ in timings), strict=True))
    print(
        f"\nlock safety: {len(timings)} writer statements, {sum(during)} during the "
        f"{up_end - up_start:.2f}s upgrade ({attempts} attempt(s)); slowest {worst[1]} "
        f"{worst[0] * 1000:.0f} ms; runs {runs_done}"
    )
    assert len(during) > 0  # the writers really overlapped the upgrade
    assert worst[0] < 10.0, worst  # lock_timeout 5 s + margin
    assert {label for label, _, _ in timings} >= {
        "create_job",
        "start_run",
        "start_region",
        "record_pair",
        "runner_finish_region",
        "finish_region",
        "finish_run",
        "direct_insert",
    }

    done = cli_run(["backfill", "--dsn", dsn, "--batch-size", "500"], timeout=300)
    assert done.returncode == 0, (done.stdout, done.stderr)
    checked = cli_run(["verify", "--dsn", dsn, "--json"])
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert json.loads(checked.stdout)["drift"] is False
    assert_exact(empty_db)
    assert_matches_oracle(empty_db)
    assert_no_constraint_violation(empty_db)
    # Each recorded run: 8 pairs, the dual-written one direct, the 7 others mirrored.
    per_job = empty_db.execute(
        "SELECT j.jobspec_id, count(*) FILTER (WHERE e.mirror_region_result_id IS NULL), "
        "count(*) FILTER (WHERE e.mirror_region_result_id IS NOT NULL AND e.status = "
        "'completed') FROM jobs j JOIN executions e ON e.job_id = j.id "
        "WHERE j.jobspec_id LIKE 'lock-%' GROUP BY 1"
    ).fetchall()
    assert len(per_job) == sum(runs_done)
    assert {(d, m) for _, d, m in per_job} == {(1, 7)}


def test_the_sql_files_of_released_revisions_are_as_released() -> None:
    """SPEC "Release": from 0.1.0 on, a SQL file that a released revision runs is never edited
    (a database already upgraded would never see the edit); a change is a new file version and
    a new revision. sql/released.sha256 holds each such file's hash as released."""
    listed = [
        line.split(maxsplit=1)
        for line in (REPO / "sql" / "released.sha256").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert len(listed) >= 30
    edited = [
        path
        for digest, path in listed
        if hashlib.sha256((REPO / "sql" / path).read_bytes()).hexdigest() != digest
    ]
    assert edited == [], f"released SQL files edited: {edited}; add a new version instead"
