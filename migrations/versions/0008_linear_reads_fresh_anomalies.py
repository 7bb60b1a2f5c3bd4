"""A job's read in time linear in its runs; a started region result's anomalies at once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

Version 2 of sql/views/executions_unified.v1.sql (the same rows as version 1): a stored row's
probes of the other candidates of its key, and of the other region results of its job and
region, ask their functions only where the answer can be yes, and a region result is
unfinished by its own status, not by the mirror state's `finished` (which a region result
started and finished in one transaction leaves false). A job run 100 times took 171 s to read.

Version 2 of sql/mirror/apply/region_results_mirror_apply.v1.sql: a region result that stores
nothing yet records the anomalies of its placeholders too (an over-long model id), not only
once it finishes.

The downgrade runs both version 1 files again.
"""

from __future__ import annotations

from beaconsql import ddl

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl.run_sql_file("views/executions_unified.v2.sql")
    ddl.run_sql_file("mirror/apply/region_results_mirror_apply.v2.sql")


def downgrade() -> None:
    ddl.run_sql_file("mirror/apply/region_results_mirror_apply.v1.sql")
    ddl.run_sql_file("views/executions_unified.v1.sql")
    ddl.execute_sql(
        "DROP FUNCTION IF EXISTS public.executions_unified_derives(text, timestamptz, boolean);"
    )
