"""Mirror: region_results into executions by one SQL rule, applied by triggers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

SPEC "The mirror rule", "Materialising the rule into executions". In the order the anchors
teach for a cut-over: the link column and the mirror's tables, then the unique key built
CONCURRENTLY, then the functions, then the triggers. History is brought in afterwards by
`beaconsql backfill`, never by a revision.
"""

from __future__ import annotations

from beaconsql import ddl

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# In dependency order: each file only uses what the files before it define.
FUNCTIONS = [
    "functions/executions_mirror_status.v1.sql",
    "functions/executions_mirror_time.v1.sql",
    "functions/region_results_mirror_elements.v1.sql",
    "functions/jobs_mirror_models.v1.sql",
    "functions/jobs_mirror_questions.v1.sql",
    "functions/region_results_mirror_region_status.v1.sql",
    "functions/region_results_mirror_element_row.v1.sql",
    "functions/region_results_mirror_rows.v1.sql",
    "functions/jobs_mirror_fingerprint.v1.sql",
    "functions/executions_mirror_lock_key.v1.sql",
    "views/region_results_mirror_inputs.v1.sql",
    "functions/region_results_mirror_changed_pairs.v1.sql",
    "functions/region_results_mirror_append.v1.sql",
    "functions/region_results_mirror_plan.v1.sql",
    "functions/executions_mirror_lock_pause.v1.sql",
    "functions/region_results_mirror_apply.v1.sql",
    "functions/executions_mirror_expects.v1.sql",
    "functions/region_results_mirror.v1.sql",
    "functions/region_results_mirror_guard.v1.sql",
    "functions/jobs_mirror.v1.sql",
    "functions/cross_region_executions_mirror.v1.sql",
    "functions/executions_mirror_claim.v1.sql",
    "functions/executions_mirror_detach.v1.sql",
    "functions/executions_mirror_forget.v1.sql",
]


def upgrade() -> None:
    ddl.run_sql_file("schema/mirror_tables.v1.sql")
    ddl.create_indexes_concurrently("schema/mirror_indexes.v1.sql")
    for path in FUNCTIONS:
        ddl.run_sql_file(path)
    ddl.run_sql_file("schema/mirror_triggers.v1.sql")


def downgrade() -> None:
    ddl.run_sql_file("schema/mirror_downgrade.v1.sql")
