"""Where a database stands: revision, mirror triggers, row counts, backfill state
(``beaconsql status``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from beaconsql import backfill, db, migration
from beaconsql.sqlfiles import named_queries


def _queries() -> Mapping[str, Any]:
    return named_queries("queries/status.sql")


@dataclass(frozen=True)
class TriggerState:
    """One mirror trigger and whether it fires."""

    table: str
    trigger: str
    state: str


@dataclass(frozen=True)
class Status:
    """What ``beaconsql status`` prints (``--json``: :meth:`to_dict`)."""

    revision: str | None
    head: str
    schema: migration.SchemaState
    triggers: list[TriggerState]
    region_results: int | None
    executions: int | None
    mirror: dict[str, int] | None
    backfill: dict[str, Any] | None

    @property
    def up_to_date(self) -> bool:
        """True when the database is stamped at head and its objects agree."""
        return self.revision == self.head and self.schema.agrees

    @property
    def mirror_active(self) -> bool:
        """True when every mirror trigger exists and fires for ordinary writes."""
        return bool(self.triggers) and all(t.state in ("enabled", "always") for t in self.triggers)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["schema"] = self.schema.to_dict()
        out["up_to_date"] = self.up_to_date
        out["mirror_active"] = self.mirror_active
        return out


def status(conn: psycopg.Connection[Any]) -> Status:
    """Return the state of *conn*'s database; parts a revision has not created yet are None.

    What is read follows the revision the objects show, not the stamp: a database stamped at
    head without the mirror's objects (``alembic stamp``) is described, not failed on.
    """
    db.adapt_to_pooler(conn)
    schema = migration.schema_state(conn)
    revision, reached = schema.stamped, schema.objects
    triggers: list[TriggerState] = []
    region_results = executions = None
    mirror = backfill_state = None
    if reached is not None:
        counts = conn.execute(_queries()["counts"]).fetchone()
        assert counts is not None
        region_results, executions = int(counts[0]), int(counts[1])
    if reached is not None and reached >= "0002":
        triggers = [TriggerState(*row) for row in conn.execute(_queries()["mirror_triggers"])]
        row = conn.execute(_queries()["mirror_counts"]).fetchone()
        assert row is not None
        keys = ("direct", "mirrored", "detached", "not_mirrored", "deleted_unmirrored", "anomalies")
        mirror = {k: int(v) for k, v in zip(keys, row, strict=True)}
    if reached is not None and reached >= "0004":
        backfill_state = backfill.last_runs(conn)
    return Status(
        revision=revision,
        head=schema.head,
        schema=schema,
        triggers=triggers,
        region_results=region_results,
        executions=executions,
        mirror=mirror,
        backfill=backfill_state,
    )
