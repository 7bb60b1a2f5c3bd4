"""Alembic, driven from Python: the revisions in ``migrations/`` and where a database stands.

``beaconsql upgrade`` is :func:`upgrade`; ``alembic upgrade head`` (with the repository's
``alembic.ini``) runs the same ``env.py``. Both take the DSN from beaconsql's own resolution
(:mod:`beaconsql.db`), or ``-x dsn=…`` on the alembic command line.

Every revision runs with ``lock_timeout`` = :data:`LOCK_TIMEOUT` and is retried at most
:data:`LOCK_ATTEMPTS` times when it cannot get a lock in time; then it fails with a
:class:`MigrationError` naming the statement that waited and the sessions it waited for.

Where a database stands has two witnesses: its stamp (``alembic_version``) and its objects
(``revision_objects`` in ``sql/queries/migration.sql``). They disagree after ``alembic
stamp`` on the wrong database or a hand-dropped object: :func:`schema_state` says so, and
:func:`upgrade` re-stamps at the revision the objects show and runs the rest again (every
revision is safe to rerun).

Alembic and SQLAlchemy are imported where they are used: importing them costs about half a
second, which every ``beaconsql`` command (and each shell completion) would otherwise pay.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable, Mapping
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from beaconsql.errors import (
    BeaconsqlError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    MigrationError,
    NotMigratedError,
)
from beaconsql.sqlfiles import named_queries, resource_dir

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

logger = logging.getLogger(__name__)

LOCK_TIMEOUT = "5s"
LOCK_ATTEMPTS = 3
BASE = "base"


def _queries() -> Mapping[str, Any]:
    return named_queries("queries/migration.sql")


def alembic_config(dsn: str | None = None) -> Config:
    """Return an Alembic configuration for this installation's ``migrations/`` folder.

    *dsn*, when given, is handed to ``env.py`` (``config.attributes["dsn"]``).
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resource_dir("migrations")))
    if dsn is not None:
        config.attributes["dsn"] = dsn
    return config


@functools.cache
def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


@dataclass(frozen=True)
class Revision:
    """One revision of ``migrations/versions``: its id, its parent, its docstring's first
    line."""

    id: str
    down_revision: str | None
    summary: str


def revisions() -> list[Revision]:
    """Return the revisions oldest first (the history is linear: one head, one base)."""
    script = _script()
    heads = script.get_heads()
    if len(heads) != 1:
        raise MigrationError(f"migrations/ has {len(heads)} heads ({heads}); expected one.")
    found = [
        Revision(
            id=str(s.revision),
            down_revision=None if s.down_revision is None else str(s.down_revision),
            summary=(s.doc or "").strip().splitlines()[0] if s.doc else "",
        )
        for s in script.walk_revisions()
    ]
    return list(reversed(found))


def head_revision() -> str:
    """Return the newest revision id (there is exactly one head)."""
    return revisions()[-1].id


def _position(revision: str | None) -> int:
    """Return the index of *revision* in :func:`revisions` (-1 for none, i.e. base)."""
    if revision is None or revision == BASE:
        return -1
    ids = [r.id for r in revisions()]
    return ids.index(revision)


def resolve_revision(revision: str, *, allow_base: bool = False) -> str | None:
    """Return the revision id *revision* names (``head``, ``base`` when *allow_base*, or an
    id); None for base.

    Raises :class:`InvalidArgumentError` (a usage error: nothing was touched) naming the
    revisions there are, before any connection.
    """
    text = revision.strip()
    ids = [r.id for r in revisions()]
    if text == "head":
        return ids[-1]
    if text == BASE and allow_base:
        return None
    if text in ids:
        return text
    choices = ", ".join([BASE] * allow_base + ids + ["head"])
    raise InvalidArgumentError(
        f"{revision!r} is not a revision of beaconsql; give one of {choices} "
        "(`beaconsql history` lists them)."
    )


def current_revision(conn: psycopg.Connection[Any]) -> str | None:
    """Return the revision *conn*'s database is stamped at, or None when beaconsql never ran
    there."""
    q = _queries()
    exists = conn.execute(q["version_table"]).fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute(q["version"]).fetchone()
    return None if row is None else str(row[0])


def require_direct(conn: psycopg.Connection[Any]) -> None:
    """Raise :class:`MigrationError` when *conn* goes through a connection pooler.

    Revisions need a session of their own: ``CREATE INDEX CONCURRENTLY`` cannot run in a
    transaction, so its ``lock_timeout`` must be a session setting, which a transaction pooler
    would neither keep for the next statement nor keep from its next client.
    """
    from beaconsql import db

    if db.behind_pooler(conn):
        raise MigrationError(
            "the DSN goes through a connection pooler (the server session answering is not "
            "the one this connection opened): migrations need a direct connection, since "
            "CREATE INDEX CONCURRENTLY runs outside a transaction and its lock_timeout must "
            "hold for the whole session. Nothing was changed. Next step: rerun with --dsn (or "
            "BEACONSQL_DATABASE_URL) naming the PostgreSQL server itself (its host and port, "
            "not the pooler's); the other commands work through the pooler."
        )


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands, by its stamp and by its objects.

    ``stamped``: the revision in ``alembic_version`` (None: never migrated, or stamped base).
    ``objects``: the newest revision whose marker objects, and those of every revision before
    it, are all present (None when not even the baseline's are). ``missing``: for revisions up
    to the stamp, the marker objects that are not there. ``present_above``: revisions above the
    stamp whose marker objects are all there.
    """

    stamped: str | None
    objects: str | None
    head: str
    missing: dict[str, list[str]]
    present_above: list[str]

    @property
    def agrees(self) -> bool:
        """True when the stamp and the objects tell the same revision."""
        return self.stamped == self.objects

    def to_dict(self) -> dict[str, Any]:
        return {
            "stamped": self.stamped,
            "objects": self.objects,
            "agrees": self.agrees,
            "missing": self.missing,
            "present_above_stamp": self.present_above,
        }

    def describe(self) -> str:
        """Say, in one sentence with the next step, how the stamp and the objects disagree."""
        if self.agrees:
            return f"the stamp ({self.stamped or 'none'}) agrees with the objects present"
        stamped = self.stamped or "no revision"
        if _position(self.objects) < _position(self.stamped):
            lacking = "; ".join(
                f"{rev}: {', '.join(names)}"
                if len(names) <= 3
                else f"{rev}: {len(names)} objects, e.g. {', '.join(names[:2])}"
                for rev, names in self.missing.items()
            )
            return (
                f"the database is stamped at {stamped} but lacks objects of revisions up to it "
                f"({lacking}); its objects are those of {self.objects or 'no revision'}. "
                f"Run `beaconsql upgrade`: it re-stamps at {self.objects or 'base'} and runs the "
                "revisions after it again (each is safe to rerun)."
            )
        return (
            f"the database is stamped at {stamped} but holds the objects of revisions up to "
            f"{self.objects} ({', '.join(self.present_above)}). Run `beaconsql upgrade`: it runs "
            "those revisions again, which finds their objects in place (each is safe to rerun)."
        )


def schema_state(conn: psycopg.Connection[Any]) -> SchemaState:
    """Return the stamp of *conn*'s database and the revision its objects show."""
    stamped = current_revision(conn)
    present: dict[str, list[tuple[str, bool]]] = {}
    for revision, _kind, name, is_present, _runner in conn.execute(_queries()["revision_objects"]):
        present.setdefault(str(revision), []).append((str(name), bool(is_present)))
    ordered = revisions()
    stamp_position = _position(stamped)
    objects: str | None = None
    for position, revision in enumerate(ordered):
        markers = present.get(revision.id)
        # A revision without marker objects cannot be told by them: the stamp speaks for it.
        there = all(ok for _, ok in markers) if markers else position <= stamp_position
        if not there:
            break
        objects = revision.id
    missing = {
        r.id: [name for name, ok in present.get(r.id, []) if not ok]
        for r in ordered[: stamp_position + 1]
    }
    above = [
        r.id for r in ordered[stamp_position + 1 : _position(objects) + 1] if present.get(r.id)
    ]
    return SchemaState(
        stamped=stamped,
        objects=objects,
        head=ordered[-1].id,
        missing={k: v for k, v in missing.items() if v},
        present_above=above,
    )


def require_head(conn: psycopg.Connection[Any]) -> None:
    """Raise :class:`NotMigratedError` unless *conn*'s database is at the head revision, by its
    stamp and by its objects."""
    state = schema_state(conn)
    if state.stamped != state.head:
        where = "never migrated" if state.stamped is None else f"at revision {state.stamped}"
        raise NotMigratedError(
            f"the database is {where}; beaconsql needs revision {state.head}. "
            "Run `beaconsql upgrade` (or `alembic upgrade head`) first."
        )
    if not state.agrees:
        raise NotMigratedError(state.describe())


@dataclass(frozen=True)
class BaselineReport:
    """What the baseline revision did in one upgrade.

    ``verified``: the runner's tables it found and checked (adopted, rows untouched);
    ``created``: what it created, as recorded in ``beaconsql_baseline_objects``
    (``(object_type, object_name)``); ``added_columns``: ``table.column`` it added to tables
    it adopted (adopted columns are never recorded: no downgrade drops them).
    """

    verified: list[str]
    created: list[tuple[str, str]]
    added_columns: list[str]

    @property
    def adopted(self) -> bool:
        """True when the runner's database was there to adopt (not an empty database)."""
        return bool(self.verified)

    def to_dict(self) -> dict[str, Any]:
        return {
            "adopted": self.adopted,
            "verified_tables": self.verified,
            "created": [{"type": t, "name": n} for t, n in self.created],
            "added_columns": self.added_columns,
        }


@dataclass(frozen=True)
class UpgradeResult:
    """Where :func:`upgrade` (or :func:`downgrade`) found the database and where it left it.

    Two results are equal when they moved between the same revisions; ``applied`` (the
    revisions run, in order), ``baseline`` (what the baseline did, when it ran),
    ``restamped_from`` (the stamp found, when it claimed revisions whose objects were missing
    and was corrected) and ``started_from`` (the revision the run started from: the objects'
    after a correction, else ``before``) describe how.
    """

    before: str | None
    after: str | None
    applied: list[Revision] = field(default_factory=list, compare=False)
    baseline: BaselineReport | None = field(default=None, compare=False)
    restamped_from: str | None = field(default=None, compare=False)
    started_from: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "applied": [{"revision": r.id, "summary": r.summary} for r in self.applied],
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "restamped_from": self.restamped_from,
            "started_from": self.started_from,
        }


def upgrade(dsn: str | None, revision: str = "head", *, sql: bool = False) -> UpgradeResult | str:
    """Upgrade the database at *dsn* to *revision* (``alembic upgrade``).

    With ``sql=True`` nothing is executed (*dsn* may be None): the offline script is returned
    as text; *revision* may then be a range, ``"0001:0002"``. Online, a stamp that claims more
    than the objects show is first corrected (see :class:`SchemaState`).
    Raises :class:`InvalidArgumentError` for an unknown revision (before connecting),
    :class:`MigrationError` when the database is above *revision* (``beaconsql downgrade``
    goes down) or a revision fails (adoption refused, lock timeout).
    """
    from alembic import command

    if sql:
        return _offline(command.upgrade, revision)
    target = resolve_revision(revision)
    if dsn is None:
        raise MigrationError("a database is needed to migrate online (or pass sql=True)")
    from beaconsql import db

    with db.connect(dsn, autocommit=True) as conn:
        state = schema_state(conn)
        current, restamp = state.stamped, False
        if _position(state.objects) < _position(state.stamped):
            current, restamp = state.objects, True
        if _position(target) < _position(current):
            raise MigrationError(
                f"the database is at revision {current}, above {target}: `beaconsql upgrade` "
                f"only goes up. To go down to {target}: `beaconsql downgrade {target}`."
            )
        snapshot = _baseline_snapshot(conn) if current is None else None
    start = current
    if restamp:
        _alembic(command.stamp, dsn, current or BASE)
    baseline = None
    if snapshot is not None and target is not None:
        # The baseline alone first, so that its report holds its own work only.
        first = revisions()[0].id
        _alembic(command.upgrade, dsn, first)
        with db.connect(dsn, autocommit=True) as conn:
            baseline = _baseline_report(conn, snapshot)
        current = first
    if _position(target) > _position(current):
        _alembic(command.upgrade, dsn, target or BASE)
    with db.connect(dsn, autocommit=True) as conn:
        after = current_revision(conn)
    return UpgradeResult(
        before=state.stamped,
        after=after,
        applied=_between(start, after),
        baseline=baseline,
        restamped_from=state.stamped if restamp else None,
        started_from=start,
    )


def downgrade(dsn: str | None, revision: str, *, sql: bool = False) -> UpgradeResult | str:
    """Downgrade the database at *dsn* to *revision* (``alembic downgrade``; ``base`` removes
    everything beaconsql created).

    With ``sql=True`` the offline script is returned (*revision* a range, ``"0004:0002"``).
    Raises :class:`InvalidArgumentError` for an unknown revision (before connecting),
    :class:`MigrationError` when the database is below *revision* or a revision's downgrade
    stops (a view of someone else's depends on the mirror's, a table it created holds rows).
    ``applied`` lists the revisions undone, newest first.
    """
    from alembic import command

    if sql:
        return _offline(command.downgrade, revision)
    target = resolve_revision(revision, allow_base=True)
    if dsn is None:
        raise MigrationError("a database is needed to migrate online (or pass sql=True)")
    from beaconsql import db

    with db.connect(dsn, autocommit=True) as conn:
        require_direct(conn)
        before = current_revision(conn)
    if _position(target) > _position(before):
        raise MigrationError(
            f"the database is at revision {before or 'none (never migrated)'}, below {target}: "
            f"`beaconsql downgrade` only goes down. To go up to {target}: "
            f"`beaconsql upgrade --revision {target}`."
        )
    if _position(target) < _position(before):
        _alembic(command.downgrade, dsn, target or BASE)
    with db.connect(dsn, autocommit=True) as conn:
        after = current_revision(conn)
    return UpgradeResult(
        before=before, after=after, applied=_between(after, before)[::-1], started_from=before
    )


def _between(low: str | None, high: str | None) -> list[Revision]:
    """The revisions after *low* up to and including *high*, oldest first."""
    return revisions()[_position(low) + 1 : _position(high) + 1]


def _offline(action: Callable[..., None], revision: str) -> str:
    config = alembic_config()
    buffer = io.StringIO()
    config.output_buffer = buffer
    try:
        action(config, revision, sql=True)
    except Exception as exc:
        raise failure(exc, None) from exc
    return buffer.getvalue()


def _alembic(action: Callable[..., None], dsn: str, revision: str) -> None:
    """Run an Alembic command online; turn what it raises into a :class:`BeaconsqlError`."""
    try:
        # Alembic prints nothing to stdout online; keep it that way for --json users.
        with redirect_stdout(io.StringIO()):
            action(alembic_config(dsn), revision)
    except BeaconsqlError:
        raise
    except Exception as exc:
        raise failure(exc, dsn) from exc


def failure(exc: BaseException, dsn: str | None) -> BeaconsqlError:
    """Return the :class:`BeaconsqlError` to raise for what a migration raised: a lost
    connection (rerun), PostgreSQL's message with its detail and hint, Alembic's own."""
    from beaconsql import db

    if isinstance(exc, BeaconsqlError):
        return exc
    cause = getattr(exc, "orig", None) or exc
    if is_connection_failure(cause):
        where = db.redact_dsn(dsn) if dsn else "the server"
        return DatabaseUnavailableError(
            db.redact_text(
                f"lost the connection to {where} while migrating ({_first_line(cause)}). Rerun "
                "the command once the server is back: every revision is safe to rerun.",
                dsn,
            )
        )
    return MigrationError(
        db.redact_text(
            f"migration failed: {describe(cause)}. Next step: fix the cause, then rerun; every "
            "revision is safe to rerun (`beaconsql status` shows where the database stands).",
            dsn,
        )
    )


@dataclass(frozen=True)
class _Snapshot:
    """What the runner's tables looked like before the baseline ran."""

    last_record_id: int
    tables: list[str]
    columns: set[str]


def _runner_tables(conn: psycopg.Connection[Any]) -> tuple[list[str], list[str]]:
    """Return (the runner's tables the baseline verifies, those of them present)."""
    tables = [
        (str(name), bool(present))
        for _revision, kind, name, present, runner in conn.execute(_queries()["revision_objects"])
        if runner and kind == "relation"
    ]
    return [t for t, _ in tables], [t for t, present in tables if present]


def _baseline_snapshot(conn: psycopg.Connection[Any]) -> _Snapshot:
    q = _queries()
    all_tables, present = _runner_tables(conn)
    exists = conn.execute(q["baseline_record_exists"]).fetchone()
    row = conn.execute(q["baseline_record_last_id"]).fetchone() if exists and exists[0] else None
    columns = {f"{t}.{c}" for t, c in conn.execute(q["table_columns"], {"tables": all_tables})}
    return _Snapshot(last_record_id=int(row[0]) if row else 0, tables=present, columns=columns)


def _baseline_report(conn: psycopg.Connection[Any], before: _Snapshot) -> BaselineReport:
    q = _queries()
    all_tables, _ = _runner_tables(conn)
    created = [
        (str(kind), str(name))
        for kind, name in conn.execute(q["baseline_record_since"], {"id": before.last_record_id})
    ]
    columns = [
        f"{t}.{c}"
        for t, c in conn.execute(q["table_columns"], {"tables": all_tables})
        if t in before.tables and f"{t}.{c}" not in before.columns
    ]
    return BaselineReport(verified=before.tables, created=created, added_columns=columns)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_connection_failure(exc: BaseException) -> bool:
    """Tell whether *exc* means the connection was lost or refused (not a SQL error)."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def describe(exc: BaseException) -> str:
    """Return PostgreSQL's message with its DETAIL (which names dependent objects) and HINT,
    or the exception text. A hint to use CASCADE is left out: beaconsql never cascades."""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        text = exc.diag.message_primary
        if exc.diag.message_detail:
            text += f" ({exc.diag.message_detail.strip()})"
        hint = exc.diag.message_hint
        if hint and "CASCADE" not in hint:
            text += f" (hint: {hint})"
        return text
    return _first_line(exc)
