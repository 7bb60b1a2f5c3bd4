"""Serve: what `beaconsql serve` reads /metrics and /healthz through, and verify's last counts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

The functions run with the owner's rights (SECURITY DEFINER, search_path pinned), so that the
server needs nothing but the portal role; `beaconsql grant` gives that role EXECUTE on them.
"""

from __future__ import annotations

from beaconsql import ddl

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl.run_sql_file("serve/verify_runs.v1.sql")
    ddl.run_sql_file("serve/serve_functions.v1.sql")


def downgrade() -> None:
    ddl.execute_sql(
        "DROP FUNCTION IF EXISTS public.serve_job_known(text);\n"
        "DROP FUNCTION IF EXISTS public.serve_metrics();\n"
        "DROP FUNCTION IF EXISTS public.serve_health();\n"
        "DROP TABLE IF EXISTS public.region_results_verify_runs;"
    )
