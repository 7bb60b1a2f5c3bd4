"""The ``beaconsql`` command: a thin layer over the library.

Each command resolves the DSN, opens the database, calls one library function, prints its
result (a table for humans, ``--json`` for scripts) to stdout; everything else goes to stderr.
Exit codes: 0 ok, 1 runtime failure (``FAILED: …``, the cause and the next step), 2 usage (bad
argument: nothing was touched), 3 drift found (``verify``). ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial, wraps
from types import FrameType
from typing import Any, TypeVar

import click
import psycopg
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from beaconsql import __version__, db, migration, portal, render, roles, seed
from beaconsql import backfill as backfill_module
from beaconsql import demo as demo_module
from beaconsql import status as status_module
from beaconsql import verify as verify_module
from beaconsql.errors import BeaconsqlError

F = TypeVar("F", bound=Callable[..., Any])
DEMO_SERVE_PORT = 8000
logger = logging.getLogger("beaconsql")

# Data is printed as it is: no rich markup (answers contain [brackets]), no highlighting; when
# piped, a width that fits the tables.
stdout = Console(
    markup=False, highlight=False, emoji=False, width=None if sys.stdout.isatty() else 140
)
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
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("beaconsql").setLevel(logging.DEBUG if debug else logging.INFO)
    # Which SQL file a revision runs is detail; `beaconsql upgrade` shows the revisions.
    logging.getLogger("beaconsql.ddl").setLevel(logging.DEBUG if debug else logging.WARNING)


def dsn_option(function: F) -> F:
    """Add ``--dsn`` to a command and pass the resolved DSN on as ``dsn``."""

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
        return function(*args, dsn=db.resolve_dsn(dsn), **kwargs)

    return wrapper  # type: ignore[return-value]


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


@main.command()
@dsn_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option("--sql", "offline", is_flag=True, help="Print the SQL script instead of running it.")
def upgrade(dsn: str, revision: str, offline: bool) -> None:
    """Migrate the database to the newest revision (alembic upgrade head).

    On a database the runner built, the first revision adopts its schema and rows as they are.

    \b
    Example:
        beaconsql upgrade
        beaconsql upgrade --sql > upgrade.sql   # review, then: psql -f upgrade.sql
    """
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)
    result = migration.upgrade(dsn, revision, sql=offline)
    if isinstance(result, str):
        click.echo(result)
        return
    if result.before == result.after:
        click.echo(f"already at revision {result.after}")
    else:
        click.echo(f"upgraded {result.before or 'empty database'} -> {result.after}")


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
        render.status_report(stdout, result)


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
    type=click.IntRange(min=1),
    default=backfill_module.DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Region results per batch transaction.",
)
@click.option("--job", type=JobspecId(), help="Only this job's region results.")
@click.option("--since", type=IsoTimestamp(), help="Only region results updated at or after this.")
@click.option(
    "--sleep",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to pause between batches.",
)
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@json_option
def backfill_command(
    dsn: str,
    batch_size: int,
    job: str | None,
    since: datetime | None,
    sleep: float,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Mirror every region result that is not mirrored, and repair drift, online.

    Keyset batches up to a high-water mark, each a short transaction taking the triggers'
    locks; resumable (an interrupted run continues from its cursor) and single-runner.
    Ctrl-C or SIGTERM stops after the current batch.

    \b
    Example:
        beaconsql backfill --dry-run
        beaconsql backfill --batch-size 200 --sleep 0.5
    """
    stop = _StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with database(dsn) as conn:
            run = partial(
                backfill_module.backfill,
                conn,
                batch_size=batch_size,
                job=job,
                since=since,
                sleep=sleep,
                dry_run=dry_run,
                should_stop=lambda: stop.raised,
            )
            if sys.stderr.isatty() and not as_json:
                with Progress(
                    TextColumn("backfill"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TaskProgressColumn(show_speed=True),
                    TimeRemainingColumn(),
                    console=stderr,
                ) as bar:
                    task = bar.add_task("backfill", total=None)
                    summary = run(
                        progress=lambda done, total: bar.update(task, completed=done, total=total)
                    )
            else:
                summary = run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if as_json:
        print_json(summary.to_dict())
    else:
        render.backfill_summary(stdout, summary)
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
        report = verify_module.verify(conn, job=job)
        verify_module.record_findings(conn, report, job=job)
    if as_json:
        print_json(report.to_dict())
    else:
        render.verify_report(stdout, report)
    sys.exit(report.exit_code)


@main.command("executions")
@dsn_option
@click.argument("jobspec_id", type=JobspecId())
@click.option(
    "--limit",
    type=click.IntRange(1, portal.PAGE_LIMIT_MAX),
    help="Page size: prints the GET /api/v1/jobs/{id}?include=executions shape.",
)
@click.option("--offset", type=click.IntRange(min=0), help="Rows to skip (with --limit).")
@json_option
def executions_command(
    dsn: str, jobspec_id: str, limit: int | None, offset: int | None, as_json: bool
) -> None:
    """Show a job's executions as the portal reads them (from executions_unified).

    --json prints GET /api/v1/jobs/{id}/executions/all: {"executions": [...]}, [] for an
    unknown job. With --limit/--offset it prints the paged ?include=executions shape.

    \b
    Example:
        beaconsql executions bias-detection-1760288315095 --json | jq '.executions | length'
    """
    with database(dsn) as conn:
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
    render.executions(stdout, jobspec_id, items)


@main.command("progress")
@dsn_option
@click.argument("jobspec_id", type=JobspecId())
@json_option
def progress_command(dsn: str, jobspec_id: str, as_json: bool) -> None:
    """Show a job's progress: a region × model by question grid, and % done per dimension.

    \b
    Example:
        beaconsql progress bias-detection-1760288315095
    """
    with database(dsn) as conn:
        result = portal.progress(conn, jobspec_id)
    if as_json:
        print_json(result.to_dict())
    else:
        render.progress(stdout, result)


@main.command("grant")
@dsn_option
@click.option("--portal-role", default=roles.PORTAL_ROLE, show_default=True)
@click.option("--writer-role", default=roles.WRITER_ROLE, show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the statements; run nothing.")
@json_option
def grant_command(
    dsn: str, portal_role: str, writer_role: str, dry_run: bool, as_json: bool
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
            conn, portal_role=portal_role, writer_role=writer_role, dry_run=dry_run
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
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Milliseconds a request's statements may run (SET LOCAL per request).",
)
@click.option("--pool-min", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--pool-max", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--share",
    "share_seconds",
    type=click.FloatRange(0, 10),
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
            stdout.print(
                f"embedded PostgreSQL in {data_dir} "
                + ("stopped" if stopped else "was not running")
            )
        return
    server = db.find_dsn(dsn)
    click.get_current_context().meta["beaconsql.dsn"] = server
    if server is None:
        data_dir = db.resolve_embedded_data_dir()
        action = "using" if embedded.is_running(data_dir) else "starting"
        stderr.print(f"no database configured: {action} the embedded PostgreSQL in {data_dir}")
        running = embedded.start(data_dir)
        stderr.print(
            f"embedded PostgreSQL {running.version} is up; it keeps running for the next "
            "command (`beaconsql demo --stop` stops it)"
        )
        server = running.dsn("postgres")
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
            }
        )
        return
    out = stdout
    out.rule(f"1. {seed.SEED_JOBSPEC_ID}, recorded through the writer (mirrored by the triggers)")
    render.executions(out, result.writer_job.jobspec_id, result.writer_job.executions["executions"])
    render.progress(out, result.writer_job.progress)
    out.rule(f"2. {seed.LEGACY_JOBSPEC_ID}, recorded the runner's legacy way, before any backfill")
    render.executions(
        out, result.legacy_before.jobspec_id, result.legacy_before.executions["executions"]
    )
    render.progress(out, result.legacy_before.progress)
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


if __name__ == "__main__":  # pragma: no cover
    main()
