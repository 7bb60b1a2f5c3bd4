"""Scoped reads: the view's rows of one job or one execution id, planned once per connection.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

What the portal's reads scoped to a job or an execution select from, so that a client behind a
transaction pooler, whose statements are never prepared, does not plan the view on every read
(sql/views/executions_unified_scoped.v1.sql).
"""

from __future__ import annotations

from beaconsql import ddl

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl.run_sql_file("views/executions_unified_scoped.v1.sql")


def downgrade() -> None:
    ddl.execute_sql(
        "DROP FUNCTION IF EXISTS public.executions_unified_of_execution(bigint);\n"
        "DROP FUNCTION IF EXISTS public.executions_unified_of_job(text);"
    )
