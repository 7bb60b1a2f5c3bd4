"""Mirror: asked about a few pairs, the rule goes through those pairs' elements only.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

region_results_mirror_narrow(r, only_pairs) (sql/mirror/rule/region_results_mirror_narrow.v1.sql),
new: the region result with only the elements of these pairs, for which the rule yields the same
rows. Version 2 of the plan (sql/mirror/apply/region_results_mirror_plan.v2.sql) and of the
detach trigger function (sql/mirror/triggers/executions_mirror.v2.sql) hand it to the rule when
they ask about some pairs only. Version 1 had the rule go through every element of the region
each time: a statement changing k rows of a region of n pairs took time in k·n, and each
replaced element of a large region cost a pass over all of them twice. Version 2 of the plan
also records the state again when whether the region result is finished changed (one started
and finished in one transaction keeps its xmin, and version 1 left `finished` false). The
downgrade runs version 1 of both again and drops the function.
"""

from __future__ import annotations

from beaconsql import ddl

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl.run_sql_file("mirror/rule/region_results_mirror_narrow.v1.sql")
    ddl.run_sql_file("mirror/apply/region_results_mirror_plan.v2.sql")
    ddl.run_sql_file("mirror/triggers/executions_mirror.v2.sql")


def downgrade() -> None:
    ddl.run_sql_file("mirror/triggers/executions_mirror.v1.sql")
    ddl.run_sql_file("mirror/apply/region_results_mirror_plan.v1.sql")
    ddl.execute_sql(
        "DROP FUNCTION IF EXISTS "
        "public.region_results_mirror_narrow(public.region_results, text[]);"
    )
