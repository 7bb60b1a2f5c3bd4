"""`beaconsql serve`'s routes of the portal's other reads (runner-app.md section 3.3): each gives
its portal function's JSON, with the runner's paths and parameters; 400 for a malformed execution
id, limit or offset and a missing model_id, the runner's clamps otherwise; 404 for an unknown job
or an execution id the view does not show; deep JSON served; the portal role is enough.

One database and one server for the module (its tests only read), requested with curl.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from conftest import dsn_of
from factories import Reads, write_reads
from helpers import cloned_database, curl
from psycopg import sql

from beaconsql import portal, roles, seed
from beaconsql.serve import app as serve_app
from beaconsql.writer import MAX_JSON_DEPTH

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def reads_db(postgresql_head: Any) -> Iterator[psycopg.Connection[Any]]:
    with cloned_database(postgresql_head, "beaconsql_serve_reads") as conn:
        yield conn


@pytest.fixture(scope="module")
def reads(reads_db: psycopg.Connection[Any]) -> Reads:
    return write_reads(reads_db)


@pytest.fixture(scope="module")
def served(reads_db: psycopg.Connection[Any], reads: Reads) -> Iterator[str]:
    settings = serve_app.Settings(dsn=dsn_of(reads_db), share_seconds=0, pool_wait_seconds=1.0)
    with serve_app.serving(settings) as url:
        yield url


def without(answer: dict[str, Any], key: str) -> dict[str, Any]:
    """*answer* without its time of reading (checked for its format)."""
    assert RFC3339.match(answer[key]), answer[key]
    return {k: v for k, v in answer.items() if k != key}


def test_each_route_gives_its_portal_functions_json(reads_db, reads, served):
    api = f"{served}/api/v1"
    for query, limit, offset in (("", 20, 0), ("?limit=7&offset=3", 7, 3), ("?limit=200", 200, 0)):
        assert curl(f"{api}/executions{query}") == (
            200,
            portal.executions_list(reads_db, limit=limit, offset=offset),
        )
    for execution_id in (reads.full, reads.failed, reads.no_job, reads.edge_times):
        assert curl(f"{api}/executions/{execution_id}/details") == (
            200,
            portal.execution_details(reads_db, execution_id),
        )
    for execution_id in (reads.full, reads.odd_json):
        assert curl(f"{api}/executions/{execution_id}/receipt") == (
            200,
            portal.execution_receipt(reads_db, execution_id),
        )
    status, score = curl(f"{api}/executions/{reads.full}/bias-score")
    assert status == 200
    assert without(score, "retrieved_at") == without(
        portal.execution_bias_score(reads_db, reads.full), "retrieved_at"
    )
    for job, query, kwargs in (
        (reads.direct, "model_id=mistral-7b&question_id=taiwan_status",
         {"model_id": "mistral-7b", "question_id": "taiwan_status"}),
        (reads.direct, "model_id=llama3.2-1b", {"model_id": "llama3.2-1b"}),
        (reads.direct, "model_id=llama3.2-1b&question_id=", {"model_id": "llama3.2-1b"}),
        (reads.running, "model_id=llama3.2-1b", {"model_id": "llama3.2-1b"}),
        (reads.direct, "model_id=no-such-model", {"model_id": "no-such-model"}),
    ):  # fmt: skip
        assert curl(f"{api}/executions/{job}/cross-region?{query}") == (
            200,
            portal.cross_region_executions(reads_db, job, **kwargs),
        )
    for job in (reads.direct, seed.SEED_JOBSPEC_ID, reads.running):
        status, diff = curl(f"{api}/executions/{job}/cross-region-diff")
        assert status == 200
        assert without(diff, "generated_at") == without(
            portal.cross_region_diff(reads_db, job), "generated_at"
        )
    for query, limit in (("", 20), ("?limit=2", 2)):
        assert curl(f"{api}/diffs{query}") == (200, portal.diffs(reads_db, limit=limit))
    status, page = curl(f"{api}/executions?limit=3")
    total = reads_db.execute("SELECT count(*) FROM executions_unified").fetchone()[0]
    assert (status, page["total"], len(page["executions"])) == (200, total, 3)


def test_not_found_is_404(reads, served):
    api = f"{served}/api/v1"
    for execution_id in (reads.hidden, 999_999, -3, 2**62):
        for read in ("details", "receipt", "bias-score"):
            status, body = curl(f"{api}/executions/{execution_id}/{read}")
            assert status == 404, (execution_id, read)
            assert list(body) == ["error"]
            assert body["error"].startswith(f"no execution {execution_id}:")
    assert curl(f"{api}/executions/{reads.failed}/receipt")[0] == 404  # none stored
    assert curl(f"{api}/executions/{reads.labelled}/bias-score")[0] == 404  # none in its output
    for job in ("no-such-job", quote("x'; DROP TABLE jobs; --")):
        assert curl(f"{api}/executions/{job}/cross-region?model_id=mistral-7b") == (
            404,
            {"error": "job not found"},
        )
        assert curl(f"{api}/executions/{job}/cross-region-diff") == (
            404,
            {"error": "job not found"},
        )


def test_malformed_parameters_are_400_and_the_runners_clamps_apply(reads_db, reads, served):
    api = f"{served}/api/v1"
    for execution_id in ("abc", "1.5", "1e3", str(2**63), "0x10", "%201"):
        for read in ("details", "receipt", "bias-score"):
            status, body = curl(f"{api}/executions/{execution_id}/{read}")
            assert status == 400, (execution_id, read, body)
            assert body["error"].startswith("invalid execution id")
    for query, name in (
        ("limit=abc", "limit"),
        ("limit=2.5", "limit"),
        ("offset=ten", "offset"),
        ("limit=", "limit"),
    ):
        for route in ("executions", "diffs"):
            if route == "diffs" and name == "offset":
                continue  # /diffs takes no offset: ignored, as the runner ignores it
            status, body = curl(f"{api}/{route}?{query}")
            assert status == 400, (route, query)
            assert body == {"error": body["error"]} and body["error"].startswith(name)
    ids = [i["id"] for i in portal.executions_list(reads_db, limit=200)["executions"]]
    for query, expected in (
        ("limit=0", ids[:20]),
        ("limit=201", ids[:20]),
        ("limit=-3", ids[:20]),
        ("limit=2&offset=-1", ids[:2]),
        (f"limit=2&offset={2**63}", ids[:2]),
        ("limit=2&offset=3", ids[3:5]),
    ):
        status, page = curl(f"{api}/executions?{query}")
        assert status == 200, query
        assert [i["id"] for i in page["executions"]] == expected, query
    assert curl(f"{api}/diffs?limit=999")[1]["limit"] == 20
    for query in ("", "question_id=taiwan_status", "model_id="):
        assert curl(f"{api}/executions/{reads.direct}/cross-region?{query}") == (
            400,
            {"error": "model_id query parameter is required"},
        )
    # an unknown job without model_id: the parameter first, as the runner checks it first
    assert curl(f"{api}/executions/no-such-job/cross-region")[0] == 400
    # U+0000, which no PostgreSQL text holds, in a job, model or question id
    for route in (
        "api/v1/jobs/a%00b/executions/all",
        "api/v1/jobs/a%00b?include=executions",
        "api/v1/executions/%00/cross-region?model_id=llama3.2-1b",
        f"api/v1/executions/{reads.direct}/cross-region?model_id=%00",
        f"api/v1/executions/{reads.direct}/cross-region?model_id=m&question_id=q%00",
        "api/v1/executions/%00/cross-region-diff",
        "jobs/a%00b/progress",
    ):
        status, body = curl(f"{served}/{route}")
        assert status == 400, (route, status, body)
        assert "U+0000" in body["error"], route


def test_deep_json_is_served(reads, served):
    status, details = curl(f"{served}/api/v1/executions/{reads.deep_row}/details")
    assert status == 200
    receipt, depth = details["receipt"], 0
    while isinstance(receipt, list):
        receipt, depth = receipt[0], depth + 1
    assert (depth, receipt) == (MAX_JSON_DEPTH, portal.UNREADABLE_JSON)
    for route in (
        f"executions/{reads.deep_row}/receipt",
        f"executions/{reads.deep_row}/bias-score",
        f"executions/{reads.deep}/cross-region?model_id=llama3.2-1b",
        f"executions/{reads.deep}/cross-region-diff",
        f"jobs/{reads.deep}/executions/all",
        f"jobs/{reads.deep}?include=executions",
        "executions?limit=200",
    ):
        assert curl(f"{served}/api/v1/{route}")[0] == 200, route


def test_the_portal_role_is_enough(reads_db, reads):
    """The new reads as a login role granted the portal role only (SELECT on the view and
    jobs, and what `beaconsql grant` gives it)."""
    suffix = uuid.uuid4().hex[:10]
    login, granted, writer_role = f"bq_login_{suffix}", f"bq_portal_{suffix}", f"bq_w_{suffix}"
    reads_db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(login)))
    try:
        roles.grant(reads_db, portal_role=granted, writer_role=writer_role)
        reads_db.execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(granted), sql.Identifier(login))
        )
        with psycopg.connect(dsn_of(reads_db, login), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT 1 FROM executions LIMIT 1")
            assert portal.executions_list(conn, limit=200) == portal.executions_list(
                reads_db, limit=200
            )
            assert portal.execution_details(conn, reads.full) == portal.execution_details(
                reads_db, reads.full
            )
            assert portal.execution_receipt(conn, reads.full) == {
                "schema_version": "v0.1.0",
                "id": "receipt-full",
            }
            assert portal.execution_bias_score(conn, reads.full)["bias_metrics"]
            assert portal.cross_region_executions(
                conn, reads.direct, model_id="mistral-7b"
            ) == portal.cross_region_executions(reads_db, reads.direct, model_id="mistral-7b")
            assert len(portal.cross_region_diff(conn, reads.direct)["executions"]) == 6
            assert portal.diffs(conn) == portal.diffs(reads_db)
    finally:
        for role in (login, granted, writer_role):
            if reads_db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                reads_db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                reads_db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
