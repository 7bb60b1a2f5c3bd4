"""Mirror: a run's DELETE never waits long for one of its rows while holding others.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

Version 2 of sql/mirror/triggers/cross_region_executions_mirror.v1.sql's delete trigger: it
locks the run's executions rows through cross_region_executions_mirror_lock_rows, which keeps
what it took while it waits for a row held elsewhere, and lets go of it and waits for that row
alone when the row's holder may be waiting for it (cross_region_executions_mirror_holder_waits)
or half of deadlock_timeout has passed. Version 1 locked them in id order, and the runner's
cancel, which locks a job's rows in its own scan order, could deadlock with it. The downgrade
runs version 1 again.
"""

from __future__ import annotations

from beaconsql import ddl

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl.run_sql_file("mirror/triggers/cross_region_executions_mirror.v2.sql")


def downgrade() -> None:
    ddl.run_sql_file("mirror/triggers/cross_region_executions_mirror.v1.sql")
    ddl.execute_sql(
        "DROP FUNCTION IF EXISTS public.cross_region_executions_mirror_lock_rows(uuid);\n"
        "DROP FUNCTION IF EXISTS public.cross_region_executions_mirror_holder_waits(integer);"
    )
