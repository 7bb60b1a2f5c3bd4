"""Baseline: create the runner's schema on an empty database, or adopt the runner's own.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

SPEC "Schema". The transactional part (sql/schema/baseline.v1.sql) checks, creates and adopts
tables, columns, the transparency log's sequence/function/trigger/view and
chk_executions_status, recording what it created. The runner's indexes are then built
CONCURRENTLY (sql/schema/runner_indexes.v1.sql). The downgrade drops only what was recorded.
"""

from __future__ import annotations

from beaconsql import ddl

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RECORD_TABLE = "beaconsql_baseline_objects"


def upgrade() -> None:
    ddl.run_sql_file("schema/baseline.v1.sql")
    ddl.create_indexes_concurrently("schema/runner_indexes.v1.sql", record_in=RECORD_TABLE)


def downgrade() -> None:
    ddl.run_sql_file("schema/baseline_downgrade.v1.sql")
