"""Backfill runs: the table where `beaconsql backfill` keeps its cursor and counts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

The backfill itself is a command, never a revision: revisions take seconds, a backfill of
production history takes as long as it takes, in short batches (anchors: "Keep the backfill
out of Alembic revisions").
"""

from __future__ import annotations

from beaconsql import ddl

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl.run_sql_file("schema/backfill_runs.v1.sql")


def downgrade() -> None:
    ddl.execute_sql("DROP TABLE IF EXISTS public.region_results_backfill_runs;")
