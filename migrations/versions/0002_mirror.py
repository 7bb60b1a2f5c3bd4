"""Mirror: region_results into executions by one SQL rule, applied by triggers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

SPEC "The mirror rule", "Materialising the rule into executions". The files of
sql/mirror/manifest.toml, in its order, which is the cut-over's (anchors): the link column and
the mirror's tables, the unique key built CONCURRENTLY, the rule, the apply step, then the
triggers. History is brought in afterwards by `beaconsql backfill`, never by a revision.
"""

from __future__ import annotations

from beaconsql import ddl

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MANIFEST = "mirror/manifest.toml"


def upgrade() -> None:
    ddl.apply_manifest(MANIFEST)


def downgrade() -> None:
    ddl.undo_manifest(MANIFEST)
