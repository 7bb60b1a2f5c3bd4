"""Mirror: the rule's helpers that run in the caller's session name pg_catalog's objects.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

Version 2 of jobs_mirror_models, jobs_mirror_questions and region_results_mirror_elements
(sql/mirror/rule/*.v2.sql): the same functions with every function, operator and type
schema-qualified. They are inlined, with no search_path of their own, into queries that run in
the caller's session: the view and the writer's finish_region. There, version 1's
jsonb_typeof and jsonb operators resolved through the session's search_path, and a schema put
ahead of pg_catalog could choose the job's models and questions and the region's pairs (the
writer then closed every region as failed). The downgrade runs version 1 again.
"""

from __future__ import annotations

from beaconsql import ddl

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

FILES = (
    "mirror/rule/jobs_mirror_models",
    "mirror/rule/jobs_mirror_questions",
    "mirror/rule/region_results_mirror_elements",
)


def upgrade() -> None:
    for name in FILES:
        ddl.run_sql_file(f"{name}.v2.sql")


def downgrade() -> None:
    for name in FILES:
        ddl.run_sql_file(f"{name}.v1.sql")
