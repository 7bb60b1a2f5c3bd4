"""`beaconsql serve` (SPEC "Serving it"): each route gives the JSON of its portal function, the
status codes and error body, no database detail to a client, the per-request timeout, shared
answers, CORS and the path prefix, /metrics and /healthz, and that the portal role is enough.

Against a real server: uvicorn on a free port, requested with curl and httpx; starlette's
TestClient where the transport does not matter (CORS, root path).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import clusters
import httpx
import psycopg
import pytest
from click.testing import CliRunner
from conftest import dsn_of
from factories import make_run
from helpers import curl
from psycopg import sql

from beaconsql import migration, portal, seed, writer
from beaconsql.cli import main
from beaconsql.errors import ConfigurationError, NotMigratedError
from beaconsql.serve import app as serve_app
from beaconsql.serve.routes import API_ROUTES, Route
from beaconsql.serve.routes import progress as progress_read

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 behind its TestClient; httpx still works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

JOB = seed.SEED_JOBSPEC_ID
LEGACY = seed.LEGACY_JOBSPEC_ID


def settings(dsn: str, **overrides: Any) -> serve_app.Settings:
    """Settings for a test: nothing shared unless asked, a short wait for a connection."""
    values: dict[str, Any] = {"share_seconds": 0, "pool_wait_seconds": 1.0}
    values.update(overrides)
    return serve_app.Settings(dsn=dsn, **values)


@pytest.fixture
def seeded(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The worked example through the writer, and the legacy job derived by the view."""
    seed.record_with_writer(db, seed.jobspec())
    db.execute("ALTER TABLE region_results DISABLE TRIGGER USER")
    try:
        seed.record_legacy(db, seed.jobspec(LEGACY))
    finally:
        db.execute("ALTER TABLE region_results ENABLE TRIGGER USER")
    return db


@pytest.fixture
def served(seeded: psycopg.Connection[Any], dsn: str) -> Iterator[str]:
    with serve_app.serving(settings(dsn)) as url:
        yield url


# --------------------------------------------------------------------------------------------
# The routes give the portal functions' JSON
# --------------------------------------------------------------------------------------------


def test_curl_of_each_route_returns_the_portal_functions_json(seeded, served):
    for job in (JOB, LEGACY):
        assert curl(f"{served}/api/v1/jobs/{job}/executions/all") == (
            200,
            portal.executions_all(seeded, job),
        )
        for query, limit, offset in (
            ("include=executions", 20, 0),
            ("include=executions&exec_limit=5&exec_offset=3", 5, 3),
            ("include=EXECUTIONS&limit=100", 100, 0),
        ):
            assert curl(f"{served}/api/v1/jobs/{job}?{query}") == (
                200,
                portal.job_with_executions(seeded, job, limit=limit, offset=offset),
            )
        assert curl(f"{served}/jobs/{job}/progress") == (
            200,
            portal.progress(seeded, job).to_dict(),
        )
        full = portal.job_with_executions(seeded, job)
        assert curl(f"{served}/api/v1/jobs/{job}") == (
            200,
            {"job": full["job"], "status": full["status"]},
        )
    status, body = curl(f"{served}/api/v1/jobs/{JOB}/executions/all")
    assert len(body["executions"]) == 18
    assert {e["status"] for e in body["executions"]} == {"completed"}


def test_runner_clamps_and_malformed_parameters(seeded, served):
    def page(query: str) -> httpx.Response:
        return httpx.get(f"{served}/api/v1/jobs/{JOB}?include=executions&{query}")

    ids = [e["id"] for e in portal.executions_all(seeded, JOB)["executions"]]
    # the runner's clamps: outside 1..200 the default 20; a negative offset is 0
    for query, expected in (
        ("exec_limit=0", ids[:18]),
        ("exec_limit=201", ids[:18]),
        ("exec_limit=-3", ids[:18]),
        ("exec_limit=2&exec_offset=-1", ids[:2]),
        ("exec_limit=2&exec_offset=17", ids[17:]),
        ("exec_limit=2&exec_offset=18", []),
        ("exec_limit=%202%20", ids[:2]),
    ):
        response = page(query)
        assert response.status_code == 200, query
        assert [e["id"] for e in response.json()["executions"]] == expected, query
    for query, name in (
        ("exec_limit=abc", "exec_limit"),
        ("exec_limit=2.5", "exec_limit"),
        ("exec_offset=ten", "exec_offset"),
        ("limit=", "limit"),
        ("offset=1e3", "offset"),
    ):
        response = page(query)
        assert response.status_code == 400, query
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"error": response.json()["error"]}
        assert response.json()["error"].startswith(f"{name} must be an integer"), query


def test_unknown_and_run_only_jobs(seeded, served):
    assert curl(f"{served}/api/v1/jobs/no-such-job") == (404, {"error": "job not found"})
    assert curl(f"{served}/api/v1/jobs/no-such-job?include=executions") == (
        404,
        {"error": "job not found"},
    )
    assert curl(f"{served}/api/v1/jobs/no-such-job/executions/all") == (200, {"executions": []})
    assert curl(f"{served}/jobs/no-such-job/progress")[0] == 200
    # a run without a jobs row (and without region results yet) names a job: 200, job null
    run_only = f"run-only-{uuid.uuid4().hex[:8]}"
    make_run(seeded, jobspec_id=run_only)
    assert curl(f"{served}/api/v1/jobs/{run_only}?include=executions") == (
        200,
        {"job": None, "status": None, "executions": []},
    )
    # a jobs row without rows: 200, empty list
    writer.create_job(seeded, seed.jobspec("job-without-rows"))
    status, body = curl(f"{served}/api/v1/jobs/job-without-rows?include=executions")
    assert (status, body["status"], body["executions"]) == (200, "queued", [])
    # an unknown path: JSON 404 too
    assert curl(f"{served}/api/v2/nothing") == (404, {"error": "Not Found"})


def test_page_and_its_files_are_served(seeded, served):
    page = httpx.get(f"{served}/jobs/{JOB}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<section id="regions"' in page.text
    for asset, kind in (("progress.js", "javascript"), ("progress.css", "text/css")):
        response = httpx.get(f"{served}/static/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]


def test_progress_is_not_modified_while_unchanged(seeded, served):
    first = httpx.get(f"{served}/jobs/{JOB}/progress")
    etag = first.headers["etag"]
    again = httpx.get(f"{served}/jobs/{JOB}/progress", headers={"If-None-Match": etag})
    assert (again.status_code, again.content) == (304, b"")
    writer.create_job(seeded, seed.jobspec("another-job"))  # another job: same answer
    assert (
        httpx.get(f"{served}/jobs/{JOB}/progress", headers={"If-None-Match": etag}).status_code
        == 304
    )
    seeded.execute("UPDATE jobs SET status = 'failed' WHERE jobspec_id = %s", (JOB,))
    changed = httpx.get(f"{served}/jobs/{JOB}/progress", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["job_status"] == "failed"


def test_events_stream_the_progress(seeded, served):
    with httpx.stream("GET", f"{served}/jobs/{JOB}/events", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                assert json.loads(line[6:]) == portal.progress(seeded, JOB).to_dict()
                break


# --------------------------------------------------------------------------------------------
# Errors: nothing of the database reaches a client
# --------------------------------------------------------------------------------------------


def failing_read(conn: psycopg.Connection[Any], jobspec_id: str) -> Any:
    # The error's message quotes the text, which is the DSN's password.
    return conn.execute("SELECT %s::text::int", (jobspec_id,)).fetchone()


def test_database_error_is_500_without_details_and_logged_redacted(db, caplog):
    info = db.info
    secret = f"pw{uuid.uuid4().hex[:10]}"
    # trust authentication ignores the password, but it is in the DSN serve was given
    dsn = (
        f"host={info.host} port={info.port} user={info.user} dbname={info.dbname} password={secret}"
    )
    routes = (*API_ROUTES, Route("/boom/{jobspec_id}", failing_read))
    caplog.set_level(logging.INFO, logger="beaconsql.serve")
    with serve_app.serving(settings(dsn), routes=routes) as url:
        response = httpx.get(f"{url}/api/v1/boom/{secret}")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    assert secret not in response.text and "integer" not in response.text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "invalid input syntax for type integer" in logged and "Traceback" in logged
    assert secret not in logged and "***" in logged


def slow_read(conn: psycopg.Connection[Any], seconds: str) -> Any:
    return conn.execute("SELECT pg_sleep(%s::float8)", (seconds,)).fetchone()


def test_statement_timeout_is_per_request_and_answers_503(db, dsn):
    routes = (*API_ROUTES, Route("/sleep/{seconds}", slow_read))
    with serve_app.serving(settings(dsn, statement_timeout_ms=200), routes=routes) as url:
        response = httpx.get(f"{url}/api/v1/sleep/2")
        assert response.status_code == 503
        assert response.json() == {"error": "the database did not answer in time"}
        assert response.headers["retry-after"] == "1"
        assert httpx.get(f"{url}/api/v1/sleep/0.05").status_code == 200
        # the timeout is the request's own: the pool's connections keep the server default
        assert httpx.get(f"{url}/api/v1/jobs/x/executions/all").status_code == 200
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "0"


def test_server_restart_is_503_then_recovers_without_restarting_serve():
    with clusters.workspace() as (bindir, root):
        primary = clusters.init_primary(bindir, root)
        try:
            migration.upgrade(primary.dsn())
            with primary.connect() as conn:
                seed.record_with_writer(conn, seed.jobspec())
                expected = portal.executions_all(conn, JOB)
            with serve_app.serving(settings(primary.dsn(), pool_min=2)) as url:
                assert httpx.get(f"{url}/api/v1/jobs/{JOB}/executions/all").json() == expected
                primary.stop()
                down = httpx.get(f"{url}/api/v1/jobs/{JOB}/executions/all", timeout=10)
                assert down.status_code == 503
                assert down.json() == {"error": "the database is unavailable"}
                assert httpx.get(f"{url}/healthz", timeout=10).status_code == 503
                metrics = httpx.get(f"{url}/metrics", timeout=10).text
                assert "beaconsql_database_up 0.0" in metrics
                primary.start()
                deadline = time.monotonic() + 20
                while True:
                    up = httpx.get(f"{url}/api/v1/jobs/{JOB}/executions/all", timeout=10)
                    if up.status_code == 200 or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                assert (up.status_code, up.json()) == (200, expected)
                assert httpx.get(f"{url}/healthz").json()["database"] == "ok"
        finally:
            clusters.stop_all(primary)


# --------------------------------------------------------------------------------------------
# Shared answers, CORS, path prefix
# --------------------------------------------------------------------------------------------


def test_answers_are_shared_for_the_ttl_and_read_once_at_a_time(seeded, dsn):
    app = serve_app.create_app(settings(dsn, share_seconds=1.0))
    server = app.state.server
    with TestClient(app) as client:
        answers = []

        def get() -> None:
            answers.append(client.get(f"/jobs/{JOB}/progress").json())

        threads = [threading.Thread(target=get) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(answers) == 20 and all(a == answers[0] for a in answers)
        assert server.shared.reads == 1
        seeded.execute("UPDATE jobs SET status = 'failed' WHERE jobspec_id = %s", (JOB,))
        assert client.get(f"/jobs/{JOB}/progress").json()["job_status"] == "completed"
        assert server.shared.reads == 1
        time.sleep(1.05)
        assert client.get(f"/jobs/{JOB}/progress").json()["job_status"] == "failed"
        assert server.shared.reads == 2
        # another job, or other parameters, is another read
        client.get(f"/jobs/{LEGACY}/progress")
        client.get(f"/api/v1/jobs/{JOB}?include=executions&exec_limit=3")
        client.get(f"/api/v1/jobs/{JOB}?include=executions&exec_limit=4")
        assert server.shared.reads == 5


def test_cors_for_the_portal_origin_only(seeded, dsn):
    app = serve_app.create_app(settings(dsn, cors_origins=("https://portal.example",)))
    with TestClient(app) as client:
        url = f"/api/v1/jobs/{JOB}/executions/all"
        allowed = client.get(url, headers={"Origin": "https://portal.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://portal.example"
        other = client.get(url, headers={"Origin": "https://evil.example"})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        preflight = client.options(
            url,
            headers={"Origin": "https://portal.example", "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status_code == 200
    with TestClient(serve_app.create_app(settings(dsn))) as client:
        response = client.get(url, headers={"Origin": "https://portal.example"})
        assert "access-control-allow-origin" not in response.headers


def test_root_path_behind_a_reverse_proxy(seeded, dsn):
    # The proxy serves https://host/beacon/... and strips /beacon before forwarding.
    with serve_app.serving(settings(dsn), root_path="/beacon") as url:
        assert curl(f"{url}/api/v1/jobs/{JOB}/executions/all") == (
            200,
            portal.executions_all(seeded, JOB),
        )
        page = httpx.get(f"{url}/jobs/{JOB}")
        assert page.status_code == 200
        assert httpx.get(f"{url}/static/progress.js").status_code == 200
    # the page's links are relative, so they resolve under the prefix the browser sees
    links = re.findall(r'(?:href|src)="([^"]+)"', page.text)
    assert links == ["../static/progress.css", "../static/progress.js"]
    proxied = httpx.URL(f"https://host/beacon/jobs/{JOB}")
    assert {str(proxied.join(link)) for link in links} == {
        "https://host/beacon/static/progress.css",
        "https://host/beacon/static/progress.js",
    }


# --------------------------------------------------------------------------------------------
# /metrics and /healthz
# --------------------------------------------------------------------------------------------


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_report_the_mirror_verify_backfill_and_requests(db, dsn):
    seed.record_with_writer(db, seed.jobspec())
    db.execute("ALTER TABLE region_results DISABLE TRIGGER USER")
    try:
        seed.record_legacy(db, seed.jobspec(LEGACY))  # two region results not mirrored
    finally:
        db.execute("ALTER TABLE region_results ENABLE TRIGGER USER")
    spec = seed.jobspec("bad-status-job")
    writer.create_job(db, spec)
    run = writer.start_run(db, spec["id"], regions=["US"])
    rid = writer.start_region(db, run, "US")
    db.execute("UPDATE region_results SET status = 'weird' WHERE id = %s", (rid,))
    kinds = dict(
        db.execute("SELECT kind, count(*) FROM region_results_mirror_anomalies GROUP BY 1")
    )
    assert kinds, "the unknown status is an anomaly"
    env = {"BEACONSQL_DATABASE_URL": dsn, "DATABASE_URL": None}
    assert CliRunner().invoke(main, ["verify"], env=env).exit_code == 3
    assert CliRunner().invoke(main, ["verify", "--job", JOB], env=env).exit_code == 0
    with serve_app.serving(settings(dsn)) as url:
        httpx.get(f"{url}/api/v1/jobs/{JOB}/executions/all")
        httpx.get(f"{url}/api/v1/jobs/nope")
        m = samples(httpx.get(f"{url}/metrics").text)
        assert m["beaconsql_database_up"] == 1
        assert m["beaconsql_region_results_not_mirrored"] == 2
        for kind, count in kinds.items():
            assert m[f'beaconsql_mirror_anomalies{{kind="{kind}"}}'] == count
        # the last whole-database verify, not the later one of a single job
        assert m['beaconsql_verify_findings{kind="not_mirrored"}'] == 2
        assert m['beaconsql_verify_findings{kind="anomalies"}'] == sum(kinds.values())
        assert m["beaconsql_verify_last_run_timestamp_seconds"] > time.time() - 600
        assert "beaconsql_backfill_running" not in m
        routes = '{route="/api/v1/jobs/{jobspec_id}/executions/all",status="200"}'
        assert m[f"beaconsql_serve_requests_total{routes}"] == 1
        assert (
            m['beaconsql_serve_requests_total{route="/api/v1/jobs/{jobspec_id}",status="404"}'] == 1
        )
        executions_all = '{route="/api/v1/jobs/{jobspec_id}/executions/all"}'
        assert m[f"beaconsql_serve_request_seconds_count{executions_all}"] == 1
        # two requests, two reads (nothing is shared here); the scrape reads after counting
        assert m["beaconsql_serve_database_reads_total"] == 2
        assert CliRunner().invoke(main, ["backfill"], env=env).exit_code == 0
        m = samples(httpx.get(f"{url}/metrics").text)
        assert m["beaconsql_region_results_not_mirrored"] == 0
        assert m["beaconsql_backfill_running"] == 0
        assert m["beaconsql_backfill_cursor_fraction"] == 1
        assert (
            m["beaconsql_backfill_examined"]
            == db.execute("SELECT count(*) FROM region_results").fetchone()[0]
        )
        assert m["beaconsql_backfill_rate_per_second"] > 0


def test_backfill_cursor_fraction_follows_the_uuid_key_space(db, dsn):
    db.execute(
        "INSERT INTO region_results_backfill_runs (status, cursor, examined, updated_at, "
        "started_at) VALUES ('running', '40000000-0000-4000-8000-000000000000', 50, "
        "now(), now() - interval '10 seconds')"
    )
    with serve_app.serving(settings(dsn)) as url:
        m = samples(httpx.get(f"{url}/metrics").text)
    assert m["beaconsql_backfill_running"] == 1
    assert m["beaconsql_backfill_cursor_fraction"] == 0.25
    assert 4.9 < m["beaconsql_backfill_rate_per_second"] < 5.1


def test_healthz(db, dsn):
    head = migration.head_revision()
    with serve_app.serving(settings(dsn)) as url:
        ok = httpx.get(f"{url}/healthz")
        assert (ok.status_code, ok.json()) == (
            200,
            {
                "database": "ok",
                "revision": head,
                "head": head,
                "at_head": True,
                "in_recovery": False,
                "replay_lag_seconds": None,
            },
        )
        db.execute("UPDATE alembic_version SET version_num = '0004'")
        behind = httpx.get(f"{url}/healthz")
        assert behind.status_code == 503
        assert behind.json()["at_head"] is False and "0004" in behind.json()["error"]
        db.execute("UPDATE alembic_version SET version_num = %s", (head,))


# --------------------------------------------------------------------------------------------
# The portal role is enough
# --------------------------------------------------------------------------------------------


@pytest.fixture
def login_role(db: psycopg.Connection[Any], dsn: str) -> Iterator[tuple[str, str]]:
    """A fresh LOGIN role and a fresh portal role name; both dropped at teardown."""
    suffix = uuid.uuid4().hex[:10]
    login, granted = f"bq_serve_{suffix}", f"bq_portal_{suffix}"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(login)))
    yield login, granted
    for role in (login, granted, f"bq_writer_{suffix}"):
        if db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_serve_runs_as_the_portal_role(seeded, dsn, login_role):
    login, granted = login_role
    info = seeded.info
    as_login = f"host={info.host} port={info.port} user={login} dbname={info.dbname}"
    # before the grant: refused, saying what to run
    with pytest.raises(ConfigurationError, match="beaconsql grant"):
        serve_app.check_database(settings(as_login))
    writer_role = granted.replace("bq_portal_", "bq_writer_")
    env = {"BEACONSQL_DATABASE_URL": dsn, "DATABASE_URL": None}
    result = CliRunner().invoke(
        main, ["grant", "--portal-role", granted, "--writer-role", writer_role], env=env
    )
    assert result.exit_code == 0, result.output
    seeded.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(granted), sql.Identifier(login)))
    serve_app.check_database(settings(as_login))
    with serve_app.serving(settings(as_login)) as url:
        for job in (JOB, LEGACY):
            assert curl(f"{url}/api/v1/jobs/{job}/executions/all") == (
                200,
                portal.executions_all(seeded, job),
            )
            assert curl(f"{url}/api/v1/jobs/{job}?include=executions&exec_limit=7") == (
                200,
                portal.job_with_executions(seeded, job, limit=7),
            )
            assert curl(f"{url}/jobs/{job}/progress") == (200, progress_read(seeded, job))
        assert curl(f"{url}/api/v1/jobs/nope")[0] == 404
        assert curl(f"{url}/healthz")[0] == 200
        m = samples(httpx.get(f"{url}/metrics").text)
        assert m["beaconsql_database_up"] == 1
        assert m["beaconsql_region_results_not_mirrored"] == 2
    # serve's connections were the login role's, and that role reads nothing else
    with psycopg.connect(as_login, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT 1 FROM region_results LIMIT 1")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            with conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                conn.execute("UPDATE jobs SET status = 'failed'")


def test_functions_are_not_executable_by_public(db):
    rows = db.execute(
        "SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE'), p.prosecdef, "
        "p.proconfig FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace "
        "AND p.proname LIKE 'serve\\_%' ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in rows] == ["serve_health", "serve_job_known", "serve_metrics"]
    for name, public, definer, config in rows:
        assert (public, definer, config) == (False, True, ["search_path=pg_catalog, pg_temp"]), name


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_serve_refuses_an_unmigrated_database(empty_db):
    with pytest.raises(NotMigratedError, match="beaconsql upgrade"):
        serve_app.check_database(settings(dsn_of(empty_db)))
    result = CliRunner().invoke(main, ["serve", "--dsn", dsn_of(empty_db), "--port", "0"])
    assert result.exit_code == 1
    assert result.stderr.startswith("FAILED: ") and "beaconsql upgrade" in result.stderr
    assert "serving" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--read-dsn", "host=x port=notaport"],
        ["--pool-min", "5", "--pool-max", "2"],
        ["--port", "70000"],
        ["--statement-timeout", "0"],
        ["--share", "-1"],
    ],
    ids=" ".join,
)
def test_serve_bad_usage_exits_2(args):
    result = CliRunner().invoke(
        main, ["serve", "--dsn", "postgresql://nobody@127.0.0.1:1/x", *args]
    )
    assert result.exit_code == 2, result.output


def test_cli_import_stays_light():
    code = (
        "import sys, beaconsql.cli; "
        "print(sorted(m for m in sys.modules if m.startswith("
        "('starlette', 'uvicorn', 'psycopg_pool', 'prometheus_client', 'beaconsql.serve'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_demo_serve_prints_the_live_page_and_serves_it():
    with clusters.workspace() as (bindir, root):
        server = clusters.init_primary(bindir, root)
        port = clusters.free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "beaconsql.cli",
                "demo",
                "--dsn",
                server.dsn(),
                "--serve",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            lines = []
            assert process.stderr is not None
            for line in process.stderr:
                lines.append(line)
                if "Live page of the demo job" in line:
                    break
            url = f"http://127.0.0.1:{port}/jobs/{JOB}"
            assert f"Live page of the demo job: {url}" in lines[-1], "".join(lines)
            deadline = time.monotonic() + 30
            while True:
                try:
                    page = httpx.get(url)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the demo's server did not start"
                    time.sleep(0.1)
            assert page.status_code == 200 and "progress.js" in page.text
            progress = httpx.get(f"{url}/progress").json()
            assert (progress["done"], progress["expected"], progress["percent_done"]) == (
                18,
                18,
                100.0,
            )
        finally:
            process.terminate()
            process.wait(timeout=30)
            clusters.stop_all(server)
    assert process.returncode is not None
