"""The ``beaconsql`` command: a thin layer over the library.

Each command resolves the DSN, opens the database, calls one library function, prints its
result (a table for humans, ``--json`` for scripts) to stdout; everything else goes to stderr.
Exit codes: 0 ok, 1 runtime failure (``FAILED: …``, the cause and the next step), 2 usage (bad
argument: nothing was touched), 3 drift found (``verify``). ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial, wraps
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click
import psycopg
from rich.console import Console

from beaconsql import __version__, db, jobs, migration, portal, render, roles, seed
from beaconsql import backfill as backfill_module
from beaconsql import demo as demo_module
from beaconsql import status as status_module
from beaconsql import verify as verify_module
from beaconsql.errors import BeaconsqlError, InvalidArgumentError

F = TypeVar("F", bound=Callable[..., Any])
DEMO_SERVE_PORT = 8000
logger = logging.getLogger("beaconsql")

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
# PostgreSQL's bigint, the largest OFFSET (and count) the server takes.
BIGINT_MAX = portal.BIGINT_MAX


def stdout() -> Console:
    """The console for results. Data is printed as it is: no rich markup (answers contain
    [brackets]), no highlighting. Its width is the terminal's, else COLUMNS, else (piped) one
    that fits the tables."""
    fixed = sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit()
    return Console(markup=False, highlight=False, emoji=False, width=None if fixed else 140)


stderr = Console(stderr=True, markup=False, highlight=False, emoji=False)

# What to do next when PostgreSQL refuses a statement, by SQLSTATE class.
_NEXT_STEP = {
    "53": "the server is out of disk space or memory: free space on the server, then rerun "
    "(a backfill resumes where it stopped).",
    "57014": "a statement ran past statement_timeout (the session's or the role's: PGOPTIONS, "
    "ALTER ROLE … SET statement_timeout): raise it, then rerun (a backfill resumes where it "
    "stopped, and halves its batches by itself when one times out).",
    "55P03": "a lock was not granted in time (another transaction holds it): rerun off-peak.",
    "42501": "the connected role lacks a privilege: connect as the database owner.",
    "42P01": "an object is missing: run `beaconsql upgrade` first.",
    "42703": "a column is missing: `beaconsql status` compares the database's revision with its "
    "objects, and `beaconsql upgrade` repairs a wrong stamp.",
}


def _next_step(sqlstate: str | None) -> str:
    if not sqlstate:
        return "check the server log."
    return _NEXT_STEP.get(sqlstate) or _NEXT_STEP.get(sqlstate[:2]) or "check the server log."


class BeaconsqlGroup(click.Group):
    """Turns library and database errors into ``FAILED: …`` and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = "--debug" in sys.argv[1:]
        dsn = ctx.meta.get("beaconsql.dsn")
        try:
            return super().invoke(ctx)
        except BeaconsqlError as exc:
            self._fail(str(exc), exc.exit_code, debug, ctx)
        except psycopg.Error as exc:
            if migration.is_connection_failure(exc):
                message = (
                    f"lost the connection to the server ({migration.describe(exc)}); "
                    "rerun when it is back."
                )
            else:
                state = getattr(exc, "sqlstate", None)
                message = (
                    f"database error {state}: {migration.describe(exc)}. Next step: "
                    f"{_next_step(state)}"
                )
            self._fail(db.redact_text(message, ctx.meta.get("beaconsql.dsn") or dsn), 1, debug, ctx)

    @staticmethod
    def _fail(message: str, code: int, debug: bool, ctx: click.Context) -> None:
        if debug:
            import traceback

            traceback.print_exc(file=sys.stderr)
        click.echo(f"FAILED: {db.redact_text(message, ctx.meta.get('beaconsql.dsn'))}", err=True)
        ctx.exit(code)


@click.group(cls=BeaconsqlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.version_option(__version__, prog_name="beaconsql")
def main(debug: bool) -> None:
    """beaconsql: PostgreSQL as the single source of truth for Project Beacon's executions.

    The database is --dsn, else BEACONSQL_DATABASE_URL, else DATABASE_URL.

    \b
    Example:
        export BEACONSQL_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/beacon
        beaconsql upgrade && beaconsql backfill && beaconsql verify
    """
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("beaconsql").setLevel(logging.DEBUG if debug else logging.INFO)
    # Which SQL file a revision runs is detail; `beaconsql upgrade` shows the revisions.
    logging.getLogger("beaconsql.ddl").setLevel(logging.DEBUG if debug else logging.WARNING)


def _dsn_option(*, required: bool) -> Callable[[F], F]:
    def decorate(function: F) -> F:
        @click.option(
            "--dsn",
            metavar="DSN",
            help="Database to use (default: BEACONSQL_DATABASE_URL, "
            "else DATABASE_URL). Prefer the environment: a --dsn is visible to `ps`.",
        )
        @wraps(function)
        def wrapper(*args: Any, dsn: str | None, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            found = db.find_dsn(dsn)
            ctx.meta["beaconsql.dsn"] = found
            return function(*args, dsn=db.resolve_dsn(dsn) if required else found, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


# Add ``--dsn`` to a command and pass the resolved DSN on as ``dsn``; the optional form passes
# None when nothing is configured (commands that can work without a database).
dsn_option = _dsn_option(required=True)
optional_dsn_option = _dsn_option(required=False)


def usage_check(check: Callable[..., str | None]) -> Callable[[F], F]:
    """Refuse a combination of arguments as a usage error (exit 2) before the DSN is even looked
    at: *check* gets the command's arguments by keyword and returns what is wrong, or None.
    Goes above ``dsn_option``."""

    def decorate(function: F) -> F:
        @wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            problem = check(**kwargs)
            if problem is not None:
                raise click.UsageError(problem)
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(function)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


@contextmanager
def database(dsn: str, *, at_head: bool = True) -> Iterator[psycopg.Connection[Any]]:
    """Open *dsn* (autocommit) and, with *at_head*, insist it is migrated."""
    with db.connect(dsn, autocommit=True) as conn:
        if at_head:
            migration.require_head(conn)
        yield conn


class FiniteFloatRange(click.FloatRange):
    """A float within bounds, and a number: ``nan`` passes every comparison, so click's range
    alone lets it through."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class JobspecId(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """A jobspec id: any text (it is always passed as a bound parameter), but valid UTF-8."""

    name = "JOBSPEC_ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            self.fail(f"{text.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8", param, ctx)
        return text


class ExecutionId(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """An execution id as the runner's routes take it (portal.parse_execution_id: ASCII
    decimal digits, no spaces or underscores), and positive: ids start at 1."""

    name = "ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            number = value
        else:
            try:
                number = portal.parse_execution_id(str(value))
            except InvalidArgumentError as exc:
                self.fail(str(exc), param, ctx)
        if number < 1:
            self.fail(f"{value!r} is not an execution id: they start at 1", param, ctx)
        return number


class IsoTimestamp(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """An ISO 8601 timestamp; without a zone it is UTC."""

    name = "TIMESTAMP"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO 8601 timestamp (e.g. 2025-10-12T17:00:00Z)", param, ctx
            )
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _running_revisions_only(record: logging.LogRecord) -> bool:
    return record.getMessage().startswith("Running ")


def _show_revisions_running() -> None:
    """Let Alembic's "Running upgrade …" lines through to stderr (progress, during long index
    builds), not its chatter about the connection."""
    log = logging.getLogger("alembic.runtime.migration")
    log.setLevel(logging.INFO)
    if _running_revisions_only not in log.filters:
        log.addFilter(_running_revisions_only)


@main.command()
@optional_dsn_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option("--sql", "offline", is_flag=True, help="Print the SQL script instead of running it.")
@json_option
def upgrade(dsn: str | None, revision: str, offline: bool, as_json: bool) -> None:
    """Migrate the database to the newest revision (alembic upgrade head).

    On a database the runner built, the first revision adopts its schema and rows as they are,
    and the report says so: the tables verified, each column and object added. A database
    stamped above what its objects show (after `alembic stamp`) is re-stamped first. Going
    down is `beaconsql downgrade`. --sql needs no database.

    \b
    Example:
        beaconsql upgrade
        beaconsql upgrade --sql > upgrade.sql   # review, then: psql -f upgrade.sql
    """
    if offline:
        script = migration.upgrade(None, revision, sql=True)
        assert isinstance(script, str)
        click.echo(script)
        return
    migration.resolve_revision(revision)  # a usage error, before the DSN is even looked at
    _show_revisions_running()
    result = migration.upgrade(db.resolve_dsn(dsn), revision)
    assert isinstance(result, migration.UpgradeResult)
    if as_json:
        print_json(result.to_dict())
    else:
        render.upgrade_report(stdout(), result)


@main.command()
@optional_dsn_option
@click.argument("revision")
@click.option("--sql", "offline", is_flag=True, help="Print the SQL script instead of running it.")
@json_option
def downgrade(dsn: str | None, revision: str, offline: bool, as_json: bool) -> None:
    """Migrate the database down to REVISION (alembic downgrade), from the installed package.

    Down to 0002 drops the portal's view; to 0001 also the mirror (its triggers, functions and
    mirrored rows: switch the runner's dual write back on first); to base also what the
    baseline created (never an adopted column, never a table holding rows). With --sql,
    REVISION is a range (0004:0002) and no database is needed.

    \b
    Example:
        beaconsql history
        beaconsql downgrade 0002
    """
    if offline:
        script = migration.downgrade(None, revision, sql=True)
        assert isinstance(script, str)
        click.echo(script)
        return
    migration.resolve_revision(revision, allow_base=True)  # a usage error, before the DSN
    _show_revisions_running()
    result = migration.downgrade(db.resolve_dsn(dsn), revision)
    assert isinstance(result, migration.UpgradeResult)
    if as_json:
        print_json(result.to_dict())
    else:
        render.downgrade_report(stdout(), result)


@main.command()
@dsn_option
@json_option
def current(dsn: str, as_json: bool) -> None:
    """Show the revision the database is at (alembic current), and whether its objects agree.

    \b
    Example:
        beaconsql current
    """
    with database(dsn, at_head=False) as conn:
        state = migration.schema_state(conn)
    if as_json:
        print_json({"revision": state.stamped, "head": state.head, **state.to_dict()})
        return
    marks = " (head)" if state.stamped == state.head else f" (head is {state.head})"
    click.echo(f"{state.stamped or 'none (never migrated)'}{marks}")
    if not state.agrees:
        click.echo(f"stamp and objects disagree: {state.describe()}", err=True)


@main.command()
@json_option
def history(as_json: bool) -> None:
    """List the revisions this installation carries, newest first (alembic history).

    Needs no database.

    \b
    Example:
        beaconsql history
    """
    revisions = migration.revisions()
    if as_json:
        print_json(
            [
                {"revision": r.id, "down_revision": r.down_revision, "summary": r.summary}
                for r in reversed(revisions)
            ]
        )
        return
    render.history(stdout(), revisions)


@main.command("status")
@dsn_option
@json_option
def status_command(dsn: str, as_json: bool) -> None:
    """Show the revision, the mirror triggers, row counts and the backfill state.

    \b
    Example:
        beaconsql status --json
    """
    with database(dsn, at_head=False) as conn:
        result = status_module.status(conn)
    if as_json:
        print_json(result.to_dict())
    else:
        render.status_report(stdout(), result)


@contextmanager
def _logging_above(console: Console) -> Iterator[None]:
    """Send log lines through *console* while a progress bar is live on it, so that they print
    above the bar instead of through it."""

    class ThroughConsole(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            console.print(self.format(record), soft_wrap=True)

    root = logging.getLogger()
    saved = root.handlers[:]
    handler = ThroughConsole()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved


@contextmanager
def _quieter(*names: str) -> Iterator[None]:
    """Raise the loggers *names* to WARNING for the block (unless --debug): for a command
    that tells its own steps, such as the demo."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [log.level for log in loggers]
    if not logging.getLogger("beaconsql").isEnabledFor(logging.DEBUG):
        for log in loggers:
            log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for log, level in zip(loggers, saved, strict=True):
            log.setLevel(level)


class _StopFlag:
    """First SIGINT/SIGTERM: finish the current batch and stop; second: stop now."""

    def __init__(self) -> None:
        self.raised = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True
        click.echo("stopping after the current batch (again to abort it)...", err=True)


@main.command("backfill")
@dsn_option
@click.option(
    "--batch-size",
    type=click.IntRange(1, backfill_module.MAX_BATCH_SIZE),
    default=backfill_module.DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Region results per batch transaction.",
)
@click.option("--job", type=JobspecId(), help="Only this job's region results.")
@click.option("--since", type=IsoTimestamp(), help="Only region results updated at or after this.")
@click.option(
    "--sleep",
    type=FiniteFloatRange(0, backfill_module.MAX_SLEEP),
    default=0.0,
    show_default=True,
    help="Seconds to pause between batches.",
)
@click.option(
    "--lease",
    "lease_seconds",
    type=FiniteFloatRange(1, 86_400),
    metavar="SECONDS",
    help="How long the run's lease lasts without a heartbeat: a killed run whose end the "
    "server cannot see (through a pooler) keeps other runs out this long. "
    f"[default: {backfill_module.LEASE_BATCHES} x the batch statement timeout "
    f"({backfill_module.STATEMENT_TIMEOUT}) + --sleep]",
)
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@json_option
def backfill_command(
    dsn: str,
    batch_size: int,
    job: str | None,
    since: datetime | None,
    sleep: float,
    lease_seconds: float | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Mirror every region result that is not mirrored, and repair drift, online.

    Keyset batches up to a high-water mark, each a short transaction taking the triggers'
    locks; resumable (an interrupted run continues from its cursor) and single-runner (a lease
    renewed by each batch: works through a transaction pooler). Ctrl-C or SIGTERM stops after
    the current batch.

    \b
    Example:
        beaconsql backfill --dry-run
        beaconsql backfill --batch-size 200 --sleep 0.5
    """
    stop = _StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with database(dsn) as conn:
            if job is not None:
                jobs.require_known(conn, job)
            run = partial(
                backfill_module.backfill,
                conn,
                batch_size=batch_size,
                job=job,
                since=since,
                sleep=sleep,
                dry_run=dry_run,
                should_stop=lambda: stop.raised,
                lease_seconds=lease_seconds,
            )
            if sys.stderr.isatty() and not as_json:
                bar = render.BackfillBar(stderr)
                try:
                    with _logging_above(stderr):
                        summary = run(progress=bar)
                finally:
                    bar.close()
            else:
                summary = run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if as_json:
        print_json(summary.to_dict())
    else:
        render.backfill_summary(stdout(), summary)
    if not summary.complete:
        sys.exit(1)


@main.command("verify")
@dsn_option
@click.option("--job", type=JobspecId(), help="Only this job.")
@json_option
def verify_command(dsn: str, job: str | None, as_json: bool) -> None:
    """Compare what is mirrored with what the rule yields; exit 3 on drift.

    Drift: a region result not mirrored, a mirrored row missing, stale, orphaned or beside a
    direct row. Reported with exit 0: anomalies, legacy duplicates, detached rows. The counts
    by kind are kept for `beaconsql serve`'s /metrics.

    \b
    Example:
        beaconsql verify --json || beaconsql backfill
    """
    with database(dsn) as conn:
        if job is not None:
            jobs.require_known(conn, job)
        report = verify_module.verify(conn, job=job)
        verify_module.record_findings(conn, report, job=job)
    if as_json:
        print_json(report.to_dict())
    else:
        render.verify_report(stdout(), report)
    sys.exit(report.exit_code)


@main.command("executions")
@usage_check(
    lambda jobspec_id, every_job, **_: (
        None
        if every_job != (jobspec_id is not None)
        else "give a JOBSPEC_ID, or --all for every job's executions"
    )
)
@dsn_option
@click.argument("jobspec_id", type=JobspecId(), required=False)
@click.option(
    "--all",
    "every_job",
    is_flag=True,
    help="Every job's executions, newest first, a page at a time (GET /api/v1/executions).",
)
@click.option(
    "--limit",
    type=click.IntRange(1, portal.PAGE_LIMIT_MAX),
    help="Page size: with a JOBSPEC_ID prints the GET /api/v1/jobs/{id}?include=executions "
    f"shape; with --all, rows per page [default: {portal.PAGE_LIMIT_DEFAULT}].",
)
@click.option(
    "--offset", type=click.IntRange(0, BIGINT_MAX), help="Rows to skip (with --limit, or --all)."
)
@json_option
def executions_command(
    dsn: str,
    jobspec_id: str | None,
    every_job: bool,
    limit: int | None,
    offset: int | None,
    as_json: bool,
) -> None:
    """Show a job's executions, or every job's (--all), as the portal reads them.

    --json prints GET /api/v1/jobs/{id}/executions/all: {"executions": [...]}, [] for a job
    without rows. With --limit/--offset it prints the paged ?include=executions shape. A job
    that does not exist (no jobs row, no run) exits 1 naming the closest jobspec ids. --all
    prints a page of every job's rows and how many there are in all (--json: GET
    /api/v1/executions, {"executions", "limit", "offset", "total"}).

    \b
    Example:
        beaconsql executions bias-detection-1760288315095 --json | jq '.executions | length'
        beaconsql executions --all --limit 50 --offset 50
    """
    if every_job:
        with database(dsn) as conn:
            page = portal.executions_list(
                conn, limit=limit or portal.PAGE_LIMIT_DEFAULT, offset=offset or 0
            )
        if as_json:
            print_json(page)
        else:
            render.execution_list(stdout(), page)
        return
    assert jobspec_id is not None
    with database(dsn) as conn:
        jobs.require_known(conn, jobspec_id)
        if limit is not None or offset is not None:
            result = portal.job_with_executions(
                conn, jobspec_id, limit=limit or portal.PAGE_LIMIT_DEFAULT, offset=offset or 0
            )
            if as_json:
                print_json(result)
                return
            items = portal.executions_all(conn, jobspec_id)["executions"]
            start = offset or 0
            items = items[start : start + (limit or portal.PAGE_LIMIT_DEFAULT)]
        else:
            result = portal.executions_all(conn, jobspec_id)
            if as_json:
                print_json(result)
                return
            items = result["executions"]
    render.executions(stdout(), jobspec_id, items)


@main.command("execution")
@usage_check(
    lambda receipt, bias_score, **_: (
        "--receipt and --bias-score print different reads: give one"
        if receipt and bias_score
        else None
    )
)
@dsn_option
@click.argument("execution_id", metavar="ID", type=ExecutionId())
@click.option(
    "--receipt",
    is_flag=True,
    help="Print only its receipt, as GET /api/v1/executions/{id}/receipt (exit 1 without one).",
)
@click.option(
    "--bias-score",
    is_flag=True,
    help="Print only its bias score, as GET /api/v1/executions/{id}/bias-score (exit 1 "
    "without one).",
)
@json_option
def execution_command(
    dsn: str, execution_id: int, receipt: bool, bias_score: bool, as_json: bool
) -> None:
    """Show one execution by its id: status, times, answer, bias score and receipt.

    The details read carries the output (where the bias score is) and the receipt, so one
    read shows all three. --json prints GET /api/v1/executions/{id}/details. --receipt and
    --bias-score print what their routes answer, for scripts, and exit 1 when the execution
    has none. An id the view does not show (unknown, or a duplicate it hides) exits 1.

    \b
    Example:
        beaconsql execution 201
        beaconsql execution 201 --receipt | jq .execution_details
    """
    with database(dsn) as conn:
        if receipt:
            print_json(portal.execution_receipt(conn, execution_id))
            return
        if bias_score:
            score = portal.execution_bias_score(conn, execution_id)
            if as_json:
                print_json(score)
            else:
                render.bias_score(stdout(), score)
            return
        row = portal.read_execution(conn, execution_id)
    if as_json:
        print_json(portal.details_item(row))
    else:
        render.execution(stdout(), row)


@main.command("progress")
@dsn_option
@click.argument("jobspec_id", type=JobspecId())
@json_option
def progress_command(dsn: str, jobspec_id: str, as_json: bool) -> None:
    """Show a job's progress: a region × model by question grid, and % done per dimension.

    A job that does not exist (no jobs row, no run) exits 1 naming the closest jobspec ids.

    \b
    Example:
        beaconsql progress bias-detection-1760288315095
    """
    with database(dsn) as conn:
        jobs.require_known(conn, jobspec_id)
        result = portal.progress(conn, jobspec_id)
    if as_json:
        print_json(result.to_dict())
    else:
        render.progress(stdout(), result)


@main.command("grant")
@dsn_option
@click.option("--portal-role", default=roles.PORTAL_ROLE, show_default=True)
@click.option("--writer-role", default=roles.WRITER_ROLE, show_default=True)
@click.option(
    "--revoke-public-create",
    is_flag=True,
    help="Also revoke PUBLIC's CREATE on schema public (PostgreSQL's default before 15).",
)
@click.option("--dry-run", is_flag=True, help="Print the statements; run nothing.")
@json_option
def grant_command(
    dsn: str,
    portal_role: str,
    writer_role: str,
    revoke_public_create: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Create the portal and writer roles if absent and grant them in this database.

    The portal role may SELECT executions_unified and jobs only; the writer role may write the
    runner's tables (mirrored by the triggers) but not alter the schema. Roles are NOLOGIN:
    GRANT them to your application's login role.

    \b
    Example:
        beaconsql grant --dry-run
    """
    with database(dsn) as conn:
        statements = roles.grant(
            conn,
            portal_role=portal_role,
            writer_role=writer_role,
            revoke_public_create=revoke_public_create,
            dry_run=dry_run,
        )
        public_create = roles.public_may_create(conn)
    if public_create:
        click.echo(
            "WARNING: PUBLIC may create objects in schema public here: any role can plant a "
            "function there. Rerun with --revoke-public-create (or REVOKE CREATE ON SCHEMA "
            "public FROM PUBLIC) unless an application needs it.",
            err=True,
        )
    if as_json:
        print_json({"dry_run": dry_run, "statements": statements})
    else:
        for statement in statements:
            click.echo(statement + ";")
        done = "dry run: nothing was run" if dry_run else f"ran the {len(statements)} statements"
        click.echo(
            f"{done}; grant {portal_role} or {writer_role} to your application's login role",
            err=True,
        )


@main.command("serve")
@dsn_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--read-dsn",
    metavar="DSN",
    help="Send every read to this physical hot standby of the --dsn server (a logical "
    "replica is refused: its rows would all count as not mirrored).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Allow the portal at this origin (e.g. https://portal.example) to read; repeatable.",
)
@click.option(
    "--root-path",
    default="",
    help="Path prefix the reverse proxy serves this under (and strips before forwarding).",
)
@click.option(
    "--statement-timeout",
    type=click.IntRange(1, 3_600_000),
    default=5000,
    show_default=True,
    help="Milliseconds a request's statements may run (SET LOCAL per request).",
)
@click.option("--pool-min", type=click.IntRange(0, 100), default=1, show_default=True)
@click.option("--pool-max", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--share",
    "share_seconds",
    type=FiniteFloatRange(0, 10),
    default=1.0,
    show_default=True,
    help="Seconds an answer is shared among requests for the same thing (0: never).",
)
def serve_command(
    dsn: str,
    host: str,
    port: int,
    read_dsn: str | None,
    cors_origins: tuple[str, ...],
    root_path: str,
    statement_timeout: int,
    pool_min: int,
    pool_max: int,
    share_seconds: float,
) -> None:
    """Serve the portal's reads over HTTP, a live progress page per job, /metrics, /healthz.

    Read-only (the portal role of `beaconsql grant` is enough) and unauthenticated, like the
    runner's read routes: bind it to 127.0.0.1 (the default) behind your proxy's auth.
    Needs the serve extra: pip install 'beaconsql[serve]'.

    \b
    Example:
        beaconsql serve --port 8000 --cors-origin https://portal.example
        open http://127.0.0.1:8000/jobs/bias-detection-1760288315095
    """
    if pool_min > pool_max:
        raise click.BadParameter("must not exceed --pool-max", param_hint="--pool-min")
    serve_app = _serve_module()
    settings = serve_app.Settings(
        dsn=dsn,
        read_dsn=db.find_dsn(read_dsn, {}, option="--read-dsn"),
        cors_origins=cors_origins,
        statement_timeout_ms=statement_timeout,
        pool_min=pool_min,
        pool_max=pool_max,
        share_seconds=share_seconds,
    )
    serve_app.check_database(settings)
    stderr.print(f"serving {db.redact_dsn(settings.reads_from)} on http://{host}:{port}")
    serve_app.run(settings, host=host, port=port, root_path=root_path)


def _serve_demo(serve_app: Any, server: str, port: int) -> None:
    """Serve the demo database after the demo's output; print the demo job's live page."""
    settings = serve_app.Settings(dsn=db.with_dbname(server, demo_module.DEMO_DATABASE))
    serve_app.check_database(settings)
    url = f"http://127.0.0.1:{port}/jobs/{seed.SEED_JOBSPEC_ID}"
    click.echo(f"\nLive page of the demo job: {url}  (Ctrl-C stops the server)", err=True)
    serve_app.run(settings, host="127.0.0.1", port=port)


def _serve_module() -> Any:
    """Import beaconsql.serve.app, or fail saying how to install the serve extra."""
    try:
        from beaconsql.serve import app as serve_app
    except ModuleNotFoundError as exc:
        raise BeaconsqlError(
            f"beaconsql serve needs the serve extra ({exc.name} is not installed): "
            "pip install 'beaconsql[serve]'."
        ) from None
    return serve_app


@main.command("demo")
@click.option(
    "--dsn",
    metavar="DSN",
    help="Server to use (default: BEACONSQL_DATABASE_URL, "
    "else DATABASE_URL, else the embedded server). The demo works in its own "
    "database, beaconsql_demo, created afresh each run.",
)
@click.option(
    "--stop",
    is_flag=True,
    help="Stop the embedded server (its data directory: BEACONSQL_DATA_DIR, else the default) "
    "and exit; its data stays for the next demo.",
)
@click.option(
    "--serve",
    "serve_port",
    type=click.IntRange(1, 65535),
    is_flag=False,
    flag_value=DEMO_SERVE_PORT,
    default=None,
    metavar="[PORT]",
    help=f"Afterwards, serve the demo database on 127.0.0.1:PORT (default {DEMO_SERVE_PORT}) "
    "and print the URL of the demo job's live page. Needs the serve extra.",
)
@json_option
def demo_command(dsn: str | None, stop: bool, serve_port: int | None, as_json: bool) -> None:
    """Run the main job end to end on a database of its own and show what the portal sees.

    Records history the runner's legacy way, upgrades (mirror + view), records the worked
    example through the writer, shows both jobs, backfills, shows them again and verifies.
    Without a DSN it runs on the embedded server, which it starts if needed and leaves running
    for the next command (`beaconsql demo --stop` stops it).

    \b
    Example:
        beaconsql demo
        beaconsql demo --serve   # then open the live page it names
        beaconsql demo --stop
    """
    from beaconsql import embedded

    if stop:
        data_dir = db.resolve_embedded_data_dir()
        stopped = embedded.stop(data_dir)
        if as_json:
            print_json({"data_dir": str(data_dir), "stopped": stopped})
        else:
            stdout().print(
                f"embedded PostgreSQL in {data_dir} "
                + ("stopped" if stopped else "was not running")
            )
        return
    server = db.find_dsn(dsn)
    click.get_current_context().meta["beaconsql.dsn"] = server
    embedded_dir: Path | None = None
    # The demo tells its steps itself; the log lines of the server's start and of the
    # backfill's batches would repeat them (--debug shows them).
    with _quieter("beaconsql.embedded", "beaconsql.backfill"):
        if server is None:
            embedded.ensure_installed()
            data_dir = db.resolve_embedded_data_dir()
            action = "using" if embedded.is_running(data_dir) else "starting"
            stderr.print(f"no database configured: {action} the embedded PostgreSQL in {data_dir}")
            running = embedded.start(data_dir)
            stderr.print(
                f"embedded PostgreSQL {running.version} is up; it keeps running for the next "
                "command (`beaconsql demo --stop` stops it)"
            )
            server = running.dsn("postgres")
            embedded_dir = data_dir
        serve_app = _serve_module() if serve_port else None  # fail before the demo, not after
        result = demo_module.run(server, step=lambda text: stderr.print(f"· {text}"))
    if serve_app is not None and serve_port is not None:
        # after the demo's output, whichever form it takes
        click.get_current_context().call_on_close(
            partial(_serve_demo, serve_app, server, serve_port)
        )
    if as_json:
        print_json(
            {
                "database": result.database,
                "writer_job": {
                    "executions": len(result.writer_job.executions["executions"]),
                    "progress": result.writer_job.progress.to_dict(),
                },
                "legacy_job_before_backfill": {
                    "executions": len(result.legacy_before.executions["executions"]),
                    "progress": result.legacy_before.progress.to_dict(),
                },
                "backfill": result.first_backfill.to_dict(),
                "legacy_job_after_backfill": {
                    "executions": len(result.legacy_after.executions["executions"]),
                    "progress": result.legacy_after.progress.to_dict(),
                },
                "second_backfill": result.second_backfill.to_dict(),
                "verify": result.report.to_dict(),
                "next_commands": _next_commands(result, embedded_dir=embedded_dir),
            }
        )
        return
    out = stdout()
    out.rule(f"1. {seed.SEED_JOBSPEC_ID}, recorded through the writer (mirrored by the triggers)")
    render.executions(out, result.writer_job.jobspec_id, result.writer_job.executions["executions"])
    render.progress(out, result.writer_job.progress)
    out.rule(f"2. {seed.LEGACY_JOBSPEC_ID}, recorded the runner's legacy way, before any backfill")
    render.executions(
        out, result.legacy_before.jobspec_id, result.legacy_before.executions["executions"]
    )
    render.progress(out, result.legacy_before.progress)
    out.print(_legacy_note(result.legacy_before))
    out.rule("3. beaconsql backfill")
    render.backfill_summary(out, result.first_backfill)
    out.print("a second run: ", end="")
    render.backfill_summary(out, result.second_backfill)
    out.rule(f"4. {seed.LEGACY_JOBSPEC_ID} after the backfill")
    render.executions(
        out, result.legacy_after.jobspec_id, result.legacy_after.executions["executions"]
    )
    out.rule("5. beaconsql verify")
    render.verify_report(out, result.report)
    out.print(
        f"\nThe demo database is {result.database}; rerun `make demo` any time "
        "(it starts from a fresh database)."
    )
    out.print("Next, try these (runnable as printed, from this directory):")
    for line in _next_commands(result, embedded_dir=embedded_dir):
        out.print(f"  {line}", soft_wrap=True)


def _legacy_note(view: demo_module.JobView) -> str:
    """One line on why the legacy job shows failed pairs: one answer per region row."""
    items = view.executions["executions"]
    failed = sum(1 for i in items if i.get("original_error") == "no result recorded")
    regions = len(view.progress.regions)
    pairs = len(view.progress.models) * len(view.progress.questions)
    return (
        f"Why {failed} pairs failed: the runner's legacy region rows hold one answer per region "
        f"(execution_output.data), so each of the {regions} regions yields 1 completed pair of "
        f"its {pairs}; the others are 'no result recorded'."
    )


def _program() -> str:
    """How to call this command again, as the user did: ``beaconsql`` when that is on PATH,
    else the path it was run by (``.venv/bin/beaconsql`` under ``make demo``), else through
    this interpreter."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "beaconsql" and Path(argv0).exists():
        on_path = shutil.which("beaconsql")
        if on_path and Path(on_path).resolve() == Path(argv0).resolve():
            return "beaconsql"
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m beaconsql.cli"


def _next_commands(result: demo_module.DemoResult, *, embedded_dir: Path | None) -> list[str]:
    """The commands to run after the demo, against its database, runnable as printed (in a
    new shell too: a data directory other than the default is spelt out)."""
    program = _program()
    lines = [f"export BEACONSQL_DATABASE_URL={shlex.quote(result.connection)}"]
    if result.password_left_out:
        lines[0] += "   # the password is left out: set PGPASSWORD, or use ~/.pgpass"
    lines += [
        f"{program} progress {seed.SEED_JOBSPEC_ID}",
        f"{program} executions {seed.LEGACY_JOBSPEC_ID}",
        f"{program} verify",
        f"{program} status",
    ]
    if embedded_dir is not None:
        default = embedded_dir == db.resolve_embedded_data_dir({})
        where = "" if default else f"{db.DATA_DIR_VARIABLE}={shlex.quote(str(embedded_dir))} "
        lines.append(f"{where}{program} demo --stop   # stops the embedded server")
    activate = Path(program).parent / "activate"
    if program != "beaconsql" and Path(program).name == "beaconsql" and activate.exists():
        lines.append(f". {shlex.quote(str(activate))}   # then plain `beaconsql` works too")
    return lines


if __name__ == "__main__":  # pragma: no cover
    main()
