"""Reads from a physical hot standby (`beaconsql serve --read-dsn`; SPEC "Serving it").

A primary and a streaming standby built on this machine with the server's own binaries
(initdb, pg_basebackup -R): the primary is migrated and records runs through the writer; once
the standby has replayed them, serve answers from the standby with the primary's JSON. A
server that is not a physical standby of the primary (a logical replica, another cluster) is
refused; a query the standby cancels for a recovery conflict is retried once, then 503.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import clusters
import httpx
import psycopg
import pytest

from beaconsql import migration, portal, seed, writer
from beaconsql.errors import ConfigurationError
from beaconsql.serve import app as serve_app
from beaconsql.serve.routes import API_ROUTES, Route

pytestmark = pytest.mark.slow

JOB = seed.SEED_JOBSPEC_ID


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[clusters.Cluster, clusters.Cluster, Any]]:
    """A migrated primary and its streaming standby (cancelling conflicting queries at
    once), plus the workspace to build more clusters in."""
    with clusters.workspace() as (bindir, root):
        primary = clusters.init_primary(bindir, root)
        standby = None
        try:
            migration.upgrade(primary.dsn())
            standby = clusters.init_standby(
                primary, root, max_standby_streaming_delay="0", hot_standby_feedback="off"
            )
            yield primary, standby, (bindir, root)
        finally:
            clusters.stop_all(*(c for c in (standby, primary) if c is not None))


def settings(primary: clusters.Cluster, standby: clusters.Cluster) -> serve_app.Settings:
    return serve_app.Settings(
        dsn=primary.dsn(), read_dsn=standby.dsn(), share_seconds=0, pool_wait_seconds=2
    )


def test_serve_from_the_standby_gives_the_primarys_json(pair):
    primary, standby, _ = pair
    with primary.connect() as conn:
        seed.record_with_writer(conn, seed.jobspec())
        running = seed.jobspec(f"bias-detection-{uuid.uuid4().hex[:8]}")
        writer.create_job(conn, running)
        run = writer.start_run(conn, running["id"], regions=["US", "EU"])
        region = writer.start_region(conn, run, "US")
        writer.record_pair(
            conn, region, model_id=seed.MODELS[0], question_id=seed.QUESTIONS[0], status="completed"
        )
        expected = {
            job: (
                portal.executions_all(conn, job),
                portal.job_with_executions(conn, job, limit=7, offset=2),
                portal.progress(conn, job).to_dict(),
            )
            for job in (JOB, running["id"])
        }
    clusters.wait_for_replay(primary, standby)
    serve_app.check_database(settings(primary, standby))
    with serve_app.serving(settings(primary, standby)) as url:
        for job, (everything, page, progress) in expected.items():
            assert httpx.get(f"{url}/api/v1/jobs/{job}/executions/all").json() == everything
            paged = httpx.get(
                f"{url}/api/v1/jobs/{job}?include=executions&exec_limit=7&exec_offset=2"
            )
            assert paged.json() == page
            assert httpx.get(f"{url}/jobs/{job}/progress").json() == progress
        assert len(expected[JOB][0]["executions"]) == 18
        assert expected[running["id"]][2]["done"] == 1
        health = httpx.get(f"{url}/healthz").json()
        assert health["in_recovery"] is True and health["at_head"] is True
        assert isinstance(health["replay_lag_seconds"], float)
        metrics = httpx.get(f"{url}/metrics").text
        # a physical standby keeps the primary's xmins: everything still counts as mirrored
        assert "beaconsql_region_results_not_mirrored 0.0" in metrics
        assert "beaconsql_replay_lag_seconds " in metrics
        # and it follows the primary
        with primary.connect() as conn:
            writer.record_pair(
                conn,
                region,
                model_id=seed.MODELS[1],
                question_id=seed.QUESTIONS[0],
                status="failed",
            )
        clusters.wait_for_replay(primary, standby)
        assert httpx.get(f"{url}/jobs/{running['id']}/progress").json()["done"] == 2
    with standby.connect() as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_a_server_that_is_not_a_standby_of_the_primary_is_refused(pair, caplog):
    primary, standby, (bindir, root) = pair
    other = clusters.init_primary(bindir, root, name=f"other-{uuid.uuid4().hex[:6]}")
    try:
        migration.upgrade(other.dsn())  # e.g. a logical replica: same schema, its own cluster
        with pytest.raises(ConfigurationError, match="not a physical standby"):
            serve_app.check_database(serve_app.Settings(dsn=primary.dsn(), read_dsn=other.dsn()))
        # the primary given as its own read server: accepted, with a warning
        serve_app.check_database(serve_app.Settings(dsn=primary.dsn(), read_dsn=primary.dsn()))
        assert "is the primary itself" in caplog.text
        # the primary unreachable: a standby is still accepted, a non-standby refused
        unreachable = f"host=127.0.0.1 port={clusters.free_port()} user=postgres dbname=postgres"
        serve_app.check_database(serve_app.Settings(dsn=unreachable, read_dsn=standby.dsn()))
        with pytest.raises(ConfigurationError, match="not a standby"):
            serve_app.check_database(serve_app.Settings(dsn=unreachable, read_dsn=other.dsn()))
    finally:
        clusters.stop_all(other)


class ConflictProbe:
    """A read that sleeps on the standby while the primary removes row versions its snapshot
    may see (UPDATE, then VACUUM): replay cancels it (SQLSTATE 40001) for the first
    *conflicts* attempts."""

    def __init__(self, primary: clusters.Cluster, conflicts: int) -> None:
        self.primary = primary
        self.conflicts = conflicts
        self.attempts = 0
        self.errors: list[BaseException] = []

    def provoke(self) -> None:
        try:
            with self.primary.connect() as conn:
                conn.execute("UPDATE conflict_probe SET n = n + 1")
                conn.execute("VACUUM conflict_probe")
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def read(self, conn: psycopg.Connection[Any], tag: str) -> dict[str, Any]:
        # serve's first statement already took this transaction's snapshot
        self.attempts += 1
        if self.attempts <= self.conflicts:
            threading.Timer(0.3, self.provoke).start()
        row = conn.execute("SELECT count(*) FROM conflict_probe, pg_sleep(2.5)").fetchone()
        return {"rows": row[0] if row else None, "attempts": self.attempts}


@pytest.mark.parametrize("conflicts, status", [(1, 200), (2, 503)])
def test_recovery_conflict_is_retried_once_then_503(pair, conflicts, status, caplog):
    primary, standby, _ = pair
    with primary.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS conflict_probe (n int)")
        conn.execute("TRUNCATE conflict_probe")
        conn.execute("INSERT INTO conflict_probe SELECT g FROM generate_series(1, 100) g")
    clusters.wait_for_replay(primary, standby)
    probe = ConflictProbe(primary, conflicts)
    routes = (*API_ROUTES, Route("/probe/{tag}", probe.read))
    with serve_app.serving(settings(primary, standby), routes=routes) as url:
        response = httpx.get(f"{url}/api/v1/probe/{conflicts}", timeout=30)
    assert probe.errors == []
    assert probe.attempts == 2
    assert response.status_code == status
    if status == 200:
        assert response.json() == {"rows": 100, "attempts": 2}
    else:
        assert response.json() == {"error": "the database cancelled the read; retry"}
        assert response.headers["retry-after"] == "1"
    assert "conflict with recovery" in caplog.text
