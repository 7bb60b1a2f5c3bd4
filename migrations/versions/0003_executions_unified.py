"""The view executions_unified: what the portal reads.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

SPEC "The view executions_unified", and the portal's reading of a job's dimensions (for
progress). CREATE OR REPLACE VIEW can only append columns, so the
first version carries every column the SPEC lists. The downgrade drops it without CASCADE: a
view of someone else's built on it stops the downgrade with PostgreSQL's message naming it.
"""

from __future__ import annotations

from beaconsql import ddl

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl.apply_manifest("views/manifest.toml")


def downgrade() -> None:
    ddl.undo_manifest("views/manifest.toml")
