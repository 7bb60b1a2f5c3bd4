"""Mirror: an UPDATE that changes only the JSON type of a malformed executions field re-derives.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

Version 2 of sql/mirror/triggers/region_results_mirror.v1.sql: the update trigger asks
region_results_mirror_output_changed whether what the rule reads of execution_output changed.
Version 1 compared the legacy answer alone when neither version held an array of elements, so
an UPDATE from `{"executions": {...}}` to `{"executions": "x"}` kept the anomaly that named
the old type. The downgrade runs version 1 again.
"""

from __future__ import annotations

from beaconsql import ddl

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl.run_sql_file("mirror/triggers/region_results_mirror.v2.sql")


def downgrade() -> None:
    ddl.run_sql_file("mirror/triggers/region_results_mirror.v1.sql")
    ddl.execute_sql(
        "DROP FUNCTION IF EXISTS "
        "public.region_results_mirror_output_changed(jsonb, jsonb, jsonb, jsonb);"
    )
