"""The portal's reads (``beaconsql.portal``) against the contract (SPEC "Portal reads",
"Worked example"; runner-app.md sections 3.1 and 3.2): the runner's field names and formats,
the SPEC's order, ``[]`` not ``null``, limit/offset, and progress.

Tests that assert the contract where the implementation deviates are marked
``xfail(strict=True)`` with the reason; each carries a minimal repro in its docstring.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from conftest import dsn_of
from factories import (
    STARTED_AT,
    Reads,
    element,
    make_direct_execution,
    make_job,
    make_region_result,
    make_run,
    write_reads,
)
from helpers import cloned_database, fetch, scalar
from psycopg import sql

from beaconsql import migration, portal, seed, writer
from beaconsql.errors import InvalidArgumentError, NotFoundError
from beaconsql.writer import MAX_JSON_DEPTH

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
# runner-app.md 3.1: every field an item can have (some omitted when empty / NULL).
ALL_FIELDS = [
    "id", "job_id", "status", "region", "provider_id", "started_at", "completed_at",
    "created_at", "has_receipt", "output", "model_id", "question_id", "system_prompt",
    "response_classification", "is_substantive", "is_content_refusal", "response_length",
    "retry_count", "max_retries", "last_retry_at", "retry_history", "original_error",
]  # fmt: skip
OPTIONAL_FIELDS = {
    "output",
    "question_id",
    "system_prompt",
    "response_length",
    "last_retry_at",
    "original_error",
}
ALWAYS_FIELDS = set(ALL_FIELDS) - OPTIONAL_FIELDS
# runner-app.md 3.2: the items of ?include=executions.
JOB_ITEM_FIELDS = {
    "id",
    "region",
    "provider_id",
    "status",
    "model_id",
    "question_id",
    "response_classification",
    "is_substantive",
    "is_content_refusal",
}
JOB_ITEM_OPTIONAL = {"started_at", "completed_at", "receipt"}


def naive(minutes: float = 0) -> datetime:
    return (STARTED_AT + timedelta(minutes=minutes)).replace(tzinfo=None)


def rfc(value: datetime | None) -> str:
    """The runner's format of a naive UTC executions time."""
    return "" if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def small_job(conn: psycopg.Connection[Any], **kwargs: Any) -> dict[str, Any]:
    spec = seed.jobspec(
        regions=kwargs.pop("regions", ("US",)),
        models=kwargs.pop("models", ("m1",)),
        questions=kwargs.pop("questions", ("q1",)),
    )
    return make_job(conn, spec=spec, **kwargs)


# --------------------------------------------------------------------------------------------
# GET /api/v1/jobs/{id}/executions/all
# --------------------------------------------------------------------------------------------


def test_executions_all_worked_example_has_the_runners_fields(db):
    seed.record_with_writer(db, seed.jobspec())
    result = portal.executions_all(db, seed.SEED_JOBSPEC_ID)
    assert list(result) == ["executions"]
    items = result["executions"]
    assert len(items) == 18
    stored = {r["id"]: r for r in fetch(db, "SELECT * FROM executions")}
    answers = set()
    for item in items:
        assert ALWAYS_FIELDS <= set(item) <= set(ALL_FIELDS), set(item) ^ ALWAYS_FIELDS
        row = stored[item["id"]]
        assert isinstance(item["id"], int)
        assert item["job_id"] == seed.SEED_JOBSPEC_ID
        assert item["status"] == "completed"
        assert (item["region"], item["provider_id"]) == (row["region"], row["provider_id"])
        for column in ("started_at", "completed_at", "created_at"):
            assert RFC3339.match(item[column]), item[column]
            assert item[column] == rfc(row[column])
        assert item["has_receipt"] is True
        assert item["output"] == row["output_data"]
        answers.add(item["output"]["response"])
        assert (item["model_id"], item["question_id"]) == (row["model_id"], row["question_id"])
        assert "system_prompt" not in item  # NULL
        assert item["response_classification"] == "unknown"
        assert item["is_substantive"] is False and item["is_content_refusal"] is False
        assert "response_length" not in item  # 0
        assert (item["retry_count"], item["max_retries"], item["retry_history"]) == (0, 3, [])
        assert "last_retry_at" not in item and "original_error" not in item
    assert len(answers) == 18  # each row its own answer


def test_executions_all_item_of_a_direct_row_with_every_field_set(db):
    job = small_job(db)
    row = make_direct_execution(
        db,
        job_id=job["id"],
        region="EU",
        provider_id="modal-eu-west",
        model_id="mistral-7b",
        question_id="taiwan_status",
        status="completed",
        started_at=datetime(2025, 10, 12, 17, 0, 3, 987654),
        completed_at=datetime(2025, 10, 12, 17, 0, 9, 1),
        created_at=datetime(2025, 10, 12, 17, 0, 3, 987654),
        output_data={"response": "r", "bias_score": 0.5},
        receipt_data={"id": "rcpt"},
        system_prompt="be neutral",
        response_classification="content_refusal",
        is_substantive=True,
        is_content_refusal=True,
        response_length=42,
        retry_count=1,
        max_retries=5,
        last_retry_at=datetime(2025, 10, 12, 18, 0, 0, 500000, tzinfo=UTC),
        retry_history=[{"attempt": 1}],
        original_error="first try timed out",
    )
    [item] = portal.executions_all(db, job["jobspec_id"])["executions"]
    last_retry = item.pop("last_retry_at")
    assert item == {
        "id": row["id"],
        "job_id": job["jobspec_id"],
        "status": "completed",
        "region": "EU",
        "provider_id": "modal-eu-west",
        "started_at": "2025-10-12T17:00:03Z",  # no fraction, truncated
        "completed_at": "2025-10-12T17:00:09Z",
        "created_at": "2025-10-12T17:00:03Z",
        "has_receipt": True,
        "output": {"response": "r", "bias_score": 0.5},
        "model_id": "mistral-7b",
        "question_id": "taiwan_status",
        "system_prompt": "be neutral",
        "response_classification": "content_refusal",
        "is_substantive": True,
        "is_content_refusal": True,
        "response_length": 42,
        "retry_count": 1,
        "max_retries": 5,
        "retry_history": [{"attempt": 1}],
        "original_error": "first try timed out",
    }
    parsed = datetime.fromisoformat(last_retry.replace("Z", "+00:00"))
    assert last_retry.endswith("Z")
    assert parsed == datetime(2025, 10, 12, 18, 0, 0, 500000, tzinfo=UTC)


def test_executions_all_item_of_a_sparse_direct_row_omits_and_defaults(db):
    job = small_job(db)
    row = make_direct_execution(
        db,
        job_id=job["id"],
        status="pending",
        created_at=datetime(2025, 10, 12, 17, 0, 0),
        output_data=None,
        receipt_data=None,
        model_id=None,
        question_id=None,
        response_classification=None,
        is_substantive=None,
        is_content_refusal=None,
        response_length=None,
        retry_history=None,
    )
    db.execute(
        "UPDATE executions SET started_at = NULL, completed_at = NULL WHERE id = %s", (row["id"],)
    )
    [item] = portal.executions_all(db, job["jobspec_id"])["executions"]
    assert item == {
        "id": row["id"],
        "job_id": job["jobspec_id"],
        "status": "pending",
        "region": "US",
        "provider_id": "modal-us-east",
        "started_at": "",
        "completed_at": "",
        "created_at": "2025-10-12T17:00:00Z",
        "has_receipt": False,
        "model_id": "llama3.2-1b",  # COALESCE(model_id, 'llama3.2-1b')
        "response_classification": "unknown",
        "is_substantive": False,
        "is_content_refusal": False,
        "retry_count": 0,
        "max_retries": 3,
        "retry_history": [],
    }


def test_executions_all_defaults_replace_sql_null_only(db):
    """Repro: a direct row with model_id '', response_classification '' and receipt_data
    'null'::jsonb. The runner selects COALESCE(e.model_id,'llama3.2-1b') = '',
    COALESCE(e.response_classification,'unknown') = '' and (e.receipt_data IS NOT NULL) =
    true; portal.executions_all gives "llama3.2-1b", "unknown" and has_receipt false."""
    job = small_job(db)
    row = make_direct_execution(db, job_id=job["id"], model_id="", response_classification="")
    db.execute("UPDATE executions SET receipt_data = 'null'::jsonb WHERE id = %s", (row["id"],))
    [item] = portal.executions_all(db, job["jobspec_id"])["executions"]
    assert (item["model_id"], item["response_classification"], item["has_receipt"]) == (
        "",
        "",
        True,
    )


def test_executions_all_order_created_at_then_id_then_region_model_question(db):
    job = small_job(db, regions=("US", "EU"), models=("m1", "m2"))
    t1, t2, t3 = naive(1), naive(2), naive(3)
    oldest = make_direct_execution(
        db,
        job_id=job["id"],
        region="ASIA",
        model_id="m9",
        question_id="q1",
        started_at=t1,
        created_at=t1,
    )
    low = make_direct_execution(
        db,
        job_id=job["id"],
        region="ASIA",
        model_id="m1",
        question_id="q1",
        started_at=t2,
        created_at=t2,
    )
    high = make_direct_execution(
        db,
        job_id=job["id"],
        region="ASIA",
        model_id="m2",
        question_id="q1",
        started_at=t2,
        created_at=t2,
    )
    newest = make_direct_execution(
        db,
        job_id=job["id"],
        region="ASIA",
        model_id="m3",
        question_id="q1",
        started_at=t3,
        created_at=t3,
    )
    # Derived rows (no id) created at t2: running regions US and EU, not mirrored.
    db.execute("ALTER TABLE region_results DISABLE TRIGGER USER")
    try:
        run = make_run(db, jobspec_id=job["jobspec_id"])
        for region in ("US", "EU"):
            make_region_result(
                db,
                cross_region_execution_id=run["id"],
                region=region,
                status="running",
                started_at=t2.replace(tzinfo=UTC),
            )
    finally:
        db.execute("ALTER TABLE region_results ENABLE TRIGGER USER")
    items = portal.executions_all(db, job["jobspec_id"])["executions"]
    order = [(i["id"], i["region"], i["model_id"]) for i in items]
    assert order == [
        (newest["id"], "ASIA", "m3"),
        (high["id"], "ASIA", "m2"),
        (low["id"], "ASIA", "m1"),
        (None, "EU", "m1"),
        (None, "EU", "m2"),
        (None, "US", "m1"),
        (None, "US", "m2"),
        (oldest["id"], "ASIA", "m9"),
    ]


def test_executions_all_order_null_created_at_as_created_at_desc(db):
    """Repro: two direct rows of one job, created_at '2025-10-12 17:00' and NULL:
    SELECT ... ORDER BY created_at DESC lists the NULL one first (runner-app.md 3.1 and the
    SPEC's `created_at DESC`); portal.executions_all lists it last (sql/queries/portal.sql:
    `ORDER BY u.created_at DESC NULLS LAST`). Only rows written with an explicit NULL
    created_at are concerned (the column defaults to now())."""
    job = small_job(db)
    dated = make_direct_execution(
        db, job_id=job["id"], model_id="m1", question_id="q1", created_at=naive(0)
    )
    undated = make_direct_execution(
        db, job_id=job["id"], model_id="m2", question_id="q1", created_at=None
    )
    items = portal.executions_all(db, job["jobspec_id"])["executions"]
    assert [i["id"] for i in items] == [undated["id"], dated["id"]]
    assert items[0]["created_at"] == ""


def test_executions_all_is_the_same_whatever_the_session_timezone(db):
    seed.record_with_writer(db, seed.jobspec())
    db.execute(
        "UPDATE executions SET last_retry_at = '2025-10-12 18:00:00+00' WHERE id = "
        "(SELECT min(id) FROM executions)"
    )
    in_utc = portal.executions_all(db, seed.SEED_JOBSPEC_ID)
    job_in_utc = portal.job_with_executions(db, seed.SEED_JOBSPEC_ID)
    db.execute("SET TimeZone = 'Pacific/Chatham'")
    try:
        assert portal.executions_all(db, seed.SEED_JOBSPEC_ID) == in_utc
        assert portal.job_with_executions(db, seed.SEED_JOBSPEC_ID) == job_in_utc
    finally:
        db.execute("RESET TimeZone")
    first = in_utc["executions"][0]
    assert first["created_at"] == "2025-10-12T17:00:52Z"  # EU, qwen2.5-1.5b, taiwan_status
    assert any(i.get("last_retry_at") == "2025-10-12T18:00:00Z" for i in in_utc["executions"])


def test_executions_all_question_order_within_a_region_and_model(db):
    job = small_job(db, questions=("qb", "qa", "qc"))
    db.execute("ALTER TABLE region_results DISABLE TRIGGER USER")
    try:
        run = make_run(db, jobspec_id=job["jobspec_id"])
        make_region_result(db, cross_region_execution_id=run["id"], status="running")
    finally:
        db.execute("ALTER TABLE region_results ENABLE TRIGGER USER")
    items = portal.executions_all(db, job["jobspec_id"])["executions"]
    assert [i["question_id"] for i in items] == ["qa", "qb", "qc"]


def test_executions_all_unknown_job_or_job_without_rows_is_empty_list(db):
    assert portal.executions_all(db, "no-such-job") == {"executions": []}
    job = small_job(db)
    assert portal.executions_all(db, job["jobspec_id"]) == {"executions": []}


def test_executions_all_legacy_job_before_backfill_has_null_ids(db):
    db.execute("ALTER TABLE region_results DISABLE TRIGGER USER")
    try:
        seed.record_legacy(db, seed.jobspec(seed.LEGACY_JOBSPEC_ID))
    finally:
        db.execute("ALTER TABLE region_results ENABLE TRIGGER USER")
    items = portal.executions_all(db, seed.LEGACY_JOBSPEC_ID)["executions"]
    assert len(items) == 18
    assert {i["id"] for i in items} == {None}
    failed = [i for i in items if i["status"] == "failed"]
    assert len(failed) == 16
    assert {i["original_error"] for i in failed} == {"no result recorded"}
    assert {i["has_receipt"] for i in items} == {False}


# --------------------------------------------------------------------------------------------
# GET /api/v1/jobs/{id}?include=executions
# --------------------------------------------------------------------------------------------


def test_job_with_executions_shape_and_job_created_at(db):
    spec = seed.jobspec()
    seed.record_with_writer(db, spec)
    db.execute(
        "UPDATE jobs SET created_at = '2025-10-12 16:59:58.5' WHERE jobspec_id = %s",
        (seed.SEED_JOBSPEC_ID,),
    )
    result = portal.job_with_executions(db, seed.SEED_JOBSPEC_ID, limit=200)
    assert set(result) == {"job", "status", "executions"}
    job_row = fetch(db, "SELECT * FROM jobs WHERE jobspec_id = %s", (seed.SEED_JOBSPEC_ID,))[0]
    assert result["status"] == job_row["status"] == "completed"
    expected_job = dict(job_row["jobspec_data"])
    job_created = datetime.fromisoformat(result["job"].pop("created_at").replace("Z", "+00:00"))
    expected_job.pop("created_at")
    assert result["job"] == expected_job
    assert job_created == datetime(2025, 10, 12, 16, 59, 58, 500000, tzinfo=UTC)

    items = result["executions"]
    assert len(items) == 18
    stored = {r["id"]: r for r in fetch(db, "SELECT * FROM executions")}
    for item in items:
        assert JOB_ITEM_FIELDS <= set(item) <= JOB_ITEM_FIELDS | JOB_ITEM_OPTIONAL
        assert "output" not in item
        row = stored[item["id"]]
        for column in ("started_at", "completed_at"):
            got = datetime.fromisoformat(item[column].replace("Z", "+00:00"))
            assert got == row[column].replace(tzinfo=UTC)
        assert item["receipt"] == row["receipt_data"]
        assert (
            item["region"],
            item["provider_id"],
            item["status"],
            item["model_id"],
            item["question_id"],
            item["response_classification"],
            item["is_substantive"],
            item["is_content_refusal"],
        ) == (
            row["region"],
            row["provider_id"],
            row["status"],
            row["model_id"],
            row["question_id"],
            "unknown",
            False,
            False,
        )
    # same order as /executions/all
    all_ids = [i["id"] for i in portal.executions_all(db, seed.SEED_JOBSPEC_ID)["executions"]]
    assert [i["id"] for i in items] == all_ids


def test_job_with_executions_sparse_items_and_nulls(db):
    job = small_job(db)
    row = make_direct_execution(
        db,
        job_id=job["id"],
        status="pending",
        receipt_data=None,
        is_substantive=None,
        is_content_refusal=None,
        response_classification=None,
    )
    db.execute(
        "UPDATE executions SET started_at = NULL, completed_at = NULL WHERE id = %s", (row["id"],)
    )
    [item] = portal.job_with_executions(db, job["jobspec_id"])["executions"]
    assert "started_at" not in item and "completed_at" not in item and "receipt" not in item
    assert (
        item["is_substantive"],
        item["is_content_refusal"],
        item["response_classification"],
    ) == (None, None, None)


def test_job_with_executions_limit_and_offset(db):
    seed.record_with_writer(db, seed.jobspec())
    every = [i["id"] for i in portal.executions_all(db, seed.SEED_JOBSPEC_ID)["executions"]]
    assert len(portal.job_with_executions(db, seed.SEED_JOBSPEC_ID)["executions"]) == 18  # <= 20
    pages = [
        [
            i["id"]
            for i in portal.job_with_executions(db, seed.SEED_JOBSPEC_ID, limit=5, offset=offset)[
                "executions"
            ]
        ]
        for offset in (0, 5, 10, 15)
    ]
    assert [len(p) for p in pages] == [5, 5, 5, 3]
    assert sum(pages, []) == every
    assert [
        i["id"]
        for i in portal.job_with_executions(db, seed.SEED_JOBSPEC_ID, limit=5, offset=2)[
            "executions"
        ]
    ] == every[2:7]
    assert portal.job_with_executions(db, seed.SEED_JOBSPEC_ID, offset=18)["executions"] == []
    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}):
        with pytest.raises(InvalidArgumentError):
            portal.job_with_executions(db, seed.SEED_JOBSPEC_ID, **bad)


def test_job_with_executions_default_limit_is_20(db):
    seed.record_with_writer(db, seed.jobspec(models=("m1", "m2", "m3", "m4")))  # 24 rows
    assert len(portal.executions_all(db, seed.SEED_JOBSPEC_ID)["executions"]) == 24
    assert len(portal.job_with_executions(db, seed.SEED_JOBSPEC_ID)["executions"]) == 20


def test_job_with_executions_unknown_job(db):
    assert portal.job_with_executions(db, "no-such-job")["executions"] == []


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


def assert_all_done(
    tallies: dict[str, Any],
    names: list[str],
    expected_each: int,
    percent_completed: float | None = None,
) -> None:
    assert sorted(tallies) == sorted(names)
    for name, tally in tallies.items():
        assert tally["expected"] == expected_each, name
        assert tally["done"] == expected_each, name
        assert tally["percent_done"] == 100.0, name
        if percent_completed is not None:
            assert tally["percent_completed"] == percent_completed, name


def test_progress_worked_example_through_the_writer_is_100_percent(db):
    seed.record_with_writer(db, seed.jobspec())
    p = portal.progress(db, seed.SEED_JOBSPEC_ID).to_dict()
    assert p["regions"] == list(seed.REGIONS)
    assert p["models"] == list(seed.MODELS)
    assert p["questions"] == list(seed.QUESTIONS)
    assert (p["expected"], p["done"], p["percent_done"], p["percent_completed"]) == (
        18,
        18,
        100.0,
        100.0,
    )
    assert p["counts"]["completed"] == 18
    assert_all_done(p["by_region"], list(seed.REGIONS), 9, 100.0)
    assert_all_done(p["by_model"], list(seed.MODELS), 6, 100.0)
    assert_all_done(p["by_question"], list(seed.QUESTIONS), 6, 100.0)
    assert len(p["grid"]) == 18
    assert {g["status"] for g in p["grid"]} == {"completed"}


@pytest.mark.parametrize("mirrored", [True, False], ids=["mirrored", "before-backfill"])
def test_progress_legacy_job(db, mirrored):
    if mirrored:
        seed.record_legacy(db, seed.jobspec(seed.LEGACY_JOBSPEC_ID))
    else:
        db.execute("ALTER TABLE region_results DISABLE TRIGGER USER")
        try:
            seed.record_legacy(db, seed.jobspec(seed.LEGACY_JOBSPEC_ID))
        finally:
            db.execute("ALTER TABLE region_results ENABLE TRIGGER USER")
    p = portal.progress(db, seed.LEGACY_JOBSPEC_ID).to_dict()
    assert len(p["grid"]) == 18
    assert p["counts"] == {"pending": 0, "running": 0, "completed": 2, "failed": 16, "cancelled": 0}
    assert (p["expected"], p["done"], p["percent_done"], p["percent_completed"]) == (
        18,
        18,
        100.0,
        11.1,
    )
    assert_all_done(p["by_region"], list(seed.REGIONS), 9, 11.1)
    assert_all_done(p["by_model"], list(seed.MODELS), 6)
    assert p["by_model"]["llama3.2-1b"]["percent_completed"] == 33.3
    assert_all_done(p["by_question"], list(seed.QUESTIONS), 6)


def test_progress_region_timed_out_after_4_of_9_reaches_100_percent_done(db):
    spec = seed.jobspec()
    job_id = writer.create_job(db, spec, created_at=STARTED_AT)
    run_id = writer.start_run(db, spec["id"], regions=["US", "EU"], started_at=STARTED_AT)
    clock = STARTED_AT
    # EU: all nine through the writer.
    eu = writer.start_region(db, run_id, "EU", provider_id="modal-eu-west", started_at=clock)
    for model_id in seed.MODELS:
        for question_id in seed.QUESTIONS:
            writer.record_pair(
                db,
                eu,
                model_id=model_id,
                question_id=question_id,
                status="completed",
                started_at=clock,
                completed_at=clock + timedelta(seconds=3),
                output={"response": f"{model_id}/{question_id}"},
            )
            clock += timedelta(seconds=3)
    writer.finish_region(db, eu, completed_at=clock)
    # US: the runner wrote 4 direct rows, then the region timed out.
    us = writer.start_region(db, run_id, "US", provider_id="modal-us-east", started_at=clock)
    pairs = [(m, q) for m in seed.MODELS for q in seed.QUESTIONS]
    for model_id, question_id in pairs[:4]:
        make_direct_execution(
            db,
            job_id=job_id,
            region="US",
            model_id=model_id,
            question_id=question_id,
            started_at=clock.replace(tzinfo=None),
            created_at=clock.replace(tzinfo=None),
        )
    writer.finish_region(
        db,
        us,
        status="timeout",
        completed_at=clock + timedelta(minutes=10),
        error_message="region timed out",
    )
    writer.finish_run(db, run_id, completed_at=clock + timedelta(minutes=10))

    us_rows = fetch(db, "SELECT * FROM executions WHERE job_id = %s AND region = 'US'", (job_id,))
    direct = [r for r in us_rows if r["mirror_region_result_id"] is None]
    mirrored = [r for r in us_rows if r["mirror_region_result_id"] is not None]
    assert len(direct) == 4
    assert len(mirrored) == 5
    assert {r["status"] for r in mirrored} == {"failed"}
    assert {(r["model_id"], r["question_id"]) for r in mirrored} == set(pairs[4:])

    p = portal.progress(db, spec["id"]).to_dict()
    assert (p["expected"], p["done"], p["percent_done"]) == (18, 18, 100.0)
    assert p["counts"]["completed"] == 13 and p["counts"]["failed"] == 5
    assert p["by_region"]["US"]["percent_done"] == 100.0
    assert p["by_region"]["US"]["counts"]["failed"] == 5
    assert p["by_region"]["EU"]["percent_completed"] == 100.0


def test_progress_expected_never_less_than_rows_shown(db):
    spec = seed.jobspec(regions=("US",), models=("m1",), questions=("q1",))
    make_job(db, spec=spec, jobspec_id=spec["id"])
    run = make_run(db, jobspec_id=spec["id"])
    make_region_result(
        db,
        cross_region_execution_id=run["id"],
        status="success",
        completed_at=STARTED_AT + timedelta(minutes=1),
        execution_output={
            "executions": [
                element("m1", "q1"),
                element("extra-model", "q1"),
                element("m1", "extra-question"),
            ]
        },
    )
    rows = portal.executions_all(db, spec["id"])["executions"]
    assert len(rows) == 3  # a pair outside models x questions is still mirrored
    p = portal.progress(db, spec["id"]).to_dict()
    assert p["expected"] == 3
    assert (p["done"], p["percent_done"]) == (3, 100.0)
    for part in ("by_region", "by_model", "by_question"):
        for name, tally in p[part].items():
            assert tally["expected"] >= sum(tally["counts"].values()), (part, name)
            assert tally["percent_done"] <= 100.0, (part, name)
    assert p["by_model"]["extra-model"]["percent_done"] == 100.0
    assert p["by_question"]["extra-question"]["percent_done"] == 100.0


def test_progress_regions_from_constraints_else_from_rows(db):
    # constraints.regions: three expected, one ran.
    spec = seed.jobspec(regions=("US", "EU", "ASIA"))
    writer.create_job(db, spec, created_at=STARTED_AT)
    run_id = writer.start_run(db, spec["id"], regions=["US"], started_at=STARTED_AT)
    us = writer.start_region(db, run_id, "US", started_at=STARTED_AT)
    for m in seed.MODELS:
        for q in seed.QUESTIONS:
            writer.record_pair(
                db,
                us,
                model_id=m,
                question_id=q,
                status="completed",
                started_at=STARTED_AT,
                completed_at=STARTED_AT,
            )
    writer.finish_region(db, us, completed_at=STARTED_AT + timedelta(minutes=1))
    p = portal.progress(db, spec["id"]).to_dict()
    assert p["regions"] == ["US", "EU", "ASIA"]
    assert (p["expected"], p["done"], p["percent_done"]) == (27, 9, 33.3)
    assert p["by_region"]["EU"]["expected"] == 9 and p["by_region"]["EU"]["done"] == 0
    assert p["by_model"]["llama3.2-1b"]["expected"] == 9

    # no constraints.regions: the distinct regions of the job's rows.
    spec = seed.jobspec("bias-detection-no-regions")
    del spec["constraints"]["regions"]
    writer.create_job(db, spec, created_at=STARTED_AT)
    run_id = writer.start_run(db, spec["id"], regions=["US", "EU"], started_at=STARTED_AT)
    for region in ("US", "EU"):
        rr = writer.start_region(db, run_id, region, started_at=STARTED_AT)
        writer.record_pair(
            db,
            rr,
            model_id="mistral-7b",
            question_id="taiwan_status",
            status="completed",
            started_at=STARTED_AT,
            completed_at=STARTED_AT,
        )
    p = portal.progress(db, spec["id"]).to_dict()
    assert sorted(p["regions"]) == ["EU", "US"]
    assert p["expected"] == 18
    assert p["counts"]["completed"] == 2 and p["counts"]["running"] == 16
    assert p["percent_done"] == 11.1


def test_progress_unknown_job_is_empty(db):
    p = portal.progress(db, "no-such-job").to_dict()
    assert (p["expected"], p["done"], p["grid"], p["job_status"]) == (0, 0, [], None)


def test_portal_reads_nothing_but_the_view_and_jobs(db):
    """The portal's queries name only executions_unified and jobs (plus the rule's functions
    that read no table); the role test in test_roles.py runs them with those grants only."""
    from beaconsql.sqlfiles import named_queries

    queries = named_queries("queries/portal.sql")
    text = "\n".join(str(q) for q in queries.values()).lower()
    for table in (
        "public.executions ",
        "public.region_results",
        "cross_region_executions",
        "region_results_mirror_state",
        "region_results_mirror_inputs",
    ):
        assert table not in text, table


# --------------------------------------------------------------------------------------------
# The other reads (runner-app.md section 3.3), on one database recorded once for the module
# --------------------------------------------------------------------------------------------

NOW = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
GO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
LIST_ITEM_FIELDS = [
    "id", "job_id", "status", "region", "provider_id", "started_at", "completed_at",
    "created_at", "receipt_id", "output", "model_id",
]  # fmt: skip
DETAILS_FIELDS = [
    "id", "job_id", "status", "region", "provider_id", "started_at", "completed_at",
    "created_at", "output", "receipt",
]  # fmt: skip


@pytest.fixture(scope="module")
def reads_db(postgresql_head: Any) -> Iterator[psycopg.Connection[Any]]:
    """A database at head holding :func:`factories.write_reads`; its tests only read."""
    with cloned_database(postgresql_head, "beaconsql_portal_reads") as conn:
        yield conn


@pytest.fixture(scope="module")
def reads(reads_db: psycopg.Connection[Any]) -> Reads:
    return write_reads(reads_db)


def view_count(conn: psycopg.Connection[Any], where: str = "true", params: Any = None) -> int:
    return int(
        scalar(conn, sql.SQL("SELECT count(*) FROM executions_unified WHERE " + where), params)
    )


def depth_and_leaf(value: Any) -> tuple[int, Any]:
    """How many lists nest at the head of *value* (first elements), and what is at the bottom."""
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    return depth, value


def assert_cut_at_the_limit(value: Any, levels_above: int) -> None:
    """*value* (a list nested DEEP_LEVELS deep, at depth levels_above + 1 of its document) kept
    down to depth MAX_JSON_DEPTH, then the marker."""
    depth, leaf = depth_and_leaf(value)
    assert (depth, leaf) == (MAX_JSON_DEPTH - levels_above, portal.UNREADABLE_JSON)


def test_decode_json_cuts_only_what_is_deeper_than_the_limit():
    limit = MAX_JSON_DEPTH
    at_limit = "[" * limit + '"x"' + "]" * limit
    assert depth_and_leaf(portal.decode_json(at_limit)) == (limit, "x")
    deeper = '{"a": "[[[", "b": ' + "[" * 5000 + "1" + "]" * 5000 + ', "c": [1, {"d": "]}"}]}'
    value = portal.decode_json(deeper)
    assert (value["a"], value["c"]) == ("[[[", [1, {"d": "]}"}])
    assert depth_and_leaf(value["b"]) == (limit - 1, portal.UNREADABLE_JSON)
    # two deep siblings, each cut on its own, and text full of brackets left alone
    siblings = (
        "[" + ",".join("[" * 600 + "2" + "]" * 600 for _ in range(2)) + ', "' + "[" * 700 + '"]'
    )
    first, second, text = portal.decode_json(siblings)
    assert depth_and_leaf(first) == depth_and_leaf(second) == (limit - 1, portal.UNREADABLE_JSON)
    assert text == "[" * 700
    assert portal.decode_json(None) is None
    assert portal.decode_json("null") is None


def test_executions_list_envelope_total_and_pages(reads_db, reads):
    total = view_count(reads_db)
    first = portal.executions_list(reads_db)
    assert list(first) == ["executions", "limit", "offset", "total"]
    assert (first["limit"], first["offset"], first["total"]) == (20, 0, total)
    assert len(first["executions"]) == 20
    pages = [
        portal.executions_list(reads_db, limit=7, offset=offset)["executions"]
        for offset in range(0, total, 7)
    ]
    every = [item for page in pages for item in page]
    assert len(every) == total
    assert every[:20] == first["executions"]
    assert portal.executions_list(reads_db, limit=200)["executions"] == every
    assert portal.executions_list(reads_db, offset=total)["executions"] == []
    # newest first: created_at DESC, an unreadable (NULL) one first
    created = [item["created_at"] or "~" for item in every]
    assert created == sorted(created, reverse=True)
    assert every[0]["id"] == reads.edge_times
    for item in every:
        assert set(item) in (set(LIST_ITEM_FIELDS), set(LIST_ITEM_FIELDS) - {"output"}), item
    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"offset": 2**63}):
        with pytest.raises(InvalidArgumentError):
            portal.executions_list(reads_db, **bad)


def test_executions_list_items_have_the_runners_fields(reads_db, reads):
    listed = portal.executions_list(reads_db, limit=200)["executions"]
    derived = [i for i in listed if i["id"] is None]
    assert {i["job_id"] for i in derived} == {seed.LEGACY_JOBSPEC_ID, reads.running}
    assert len(derived) == 18 + 8  # the legacy job; the running region's placeholders
    every = {i["id"]: i for i in listed}
    assert every[reads.full] == {
        "id": reads.full,
        "job_id": reads.direct,
        "status": "completed",
        "region": "EU",
        "provider_id": "modal-eu-west",
        "started_at": "2025-10-12T17:10:00Z",
        "completed_at": "2025-10-12T17:10:05Z",
        "created_at": "2025-10-12T17:10:00Z",
        "receipt_id": "receipt-full",
        "output": {
            "response": "Ce sujet est sensible.",
            "bias_score": {
                "political_sensitivity": 0.4,
                "censorship_score": 0.1,
                "keyword_flags": ["taiwan"],
            },
        },
        "model_id": "mistral-7b",
    }
    failed = every[reads.failed]
    assert "output" not in failed and failed["receipt_id"] == ""
    odd = every[reads.odd_json]
    assert odd["output"] is None and odd["receipt_id"] == ""  # JSON null; a receipt array
    assert every[reads.no_job]["job_id"] == ""  # a row of no job: Go's empty string
    assert reads.hidden not in every  # the view hides the older of two identical rows
    assert reads.shown in every
    edge = every[reads.edge_times]
    assert (edge["started_at"], edge["completed_at"], edge["created_at"]) == (
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "",
    )
    nothing = every[reads.no_times]
    assert (nothing["started_at"], nothing["completed_at"]) == ("", "")
    mirrored = [i for i in every.values() if i["job_id"] == seed.SEED_JOBSPEC_ID]
    assert len(mirrored) == 18 and all(i["receipt_id"].startswith("receipt-") for i in mirrored)


def test_execution_details_of_shown_rows_and_not_found(reads_db, reads):
    assert portal.execution_details(reads_db, reads.full) == {
        "id": reads.full,
        "job_id": reads.direct,
        "status": "completed",
        "region": "EU",
        "provider_id": "modal-eu-west",
        "started_at": "2025-10-12T17:10:00Z",
        "completed_at": "2025-10-12T17:10:05Z",
        "created_at": "2025-10-12T17:10:00Z",
        "output": {
            "response": "Ce sujet est sensible.",
            "bias_score": {
                "political_sensitivity": 0.4,
                "censorship_score": 0.1,
                "keyword_flags": ["taiwan"],
            },
        },
        "receipt": {"schema_version": "v0.1.0", "id": "receipt-full"},
    }
    failed = portal.execution_details(reads_db, reads.failed)
    assert list(failed) == DETAILS_FIELDS
    assert (failed["status"], failed["output"], failed["receipt"]) == ("failed", None, None)
    assert portal.execution_details(reads_db, reads.no_job)["job_id"] == ""
    assert portal.execution_details(reads_db, reads.shown)["id"] == reads.shown
    for missing in (reads.hidden, 999_999, -5, 2**40):
        with pytest.raises(NotFoundError, match=f"no execution {missing}"):
            portal.execution_details(reads_db, missing)
    for bad in (2**63, "7", True):
        with pytest.raises(InvalidArgumentError):
            portal.execution_details(reads_db, bad)


def test_execution_receipt_as_stored(reads_db, reads):
    assert portal.execution_receipt(reads_db, reads.full) == {
        "schema_version": "v0.1.0",
        "id": "receipt-full",
    }
    assert portal.execution_receipt(reads_db, reads.odd_json) == [1, 2]
    mirrored = fetch(
        reads_db,
        "SELECT u.execution_id, e.receipt_data FROM executions_unified u "
        "JOIN executions e ON e.id = u.execution_id WHERE u.jobspec_id = %s LIMIT 1",
        (seed.SEED_JOBSPEC_ID,),
    )[0]
    assert portal.execution_receipt(reads_db, mirrored["execution_id"]) == mirrored["receipt_data"]
    with pytest.raises(NotFoundError, match=f"execution {reads.failed} has no receipt"):
        portal.execution_receipt(reads_db, reads.failed)
    for missing in (reads.hidden, 999_999):
        with pytest.raises(NotFoundError, match=f"no execution {missing}"):
            portal.execution_receipt(reads_db, missing)


def test_execution_bias_score_envelope(reads_db, reads):
    assert portal.execution_bias_score(reads_db, reads.full, now=NOW) == {
        "execution_id": reads.full,
        "bias_metrics": {
            "political_sensitivity": 0.4,
            "censorship_score": 0.1,
            "keyword_flags": ["taiwan"],
        },
        "retrieved_at": "2026-01-02T03:04:05Z",
    }
    assert RFC3339.match(portal.execution_bias_score(reads_db, reads.full)["retrieved_at"])
    for without in (reads.failed, reads.labelled, reads.odd_json):  # NULL, no key, JSON null
        with pytest.raises(NotFoundError, match=f"execution {without} has no bias score"):
            portal.execution_bias_score(reads_db, without)
    with pytest.raises(NotFoundError, match=f"no execution {reads.hidden}"):
        portal.execution_bias_score(reads_db, reads.hidden)


def test_cross_region_newest_row_per_region_with_the_runners_labels(reads_db, reads):
    result = portal.cross_region_executions(
        reads_db, reads.direct, model_id="mistral-7b", question_id="taiwan_status"
    )
    assert result == {
        "cross_region_execution": {
            "job_id": reads.direct,
            "model_id": "mistral-7b",
            "created_at": "2025-10-12T17:10:00Z",  # the first row's (region EU)
            "status": "partial",
        },
        "region_results": [
            {
                "region": "EU",
                "region_code": "EU",
                "region_name": "EU",
                "flag": "\U0001f30d",
                "status": "completed",
                "provider_id": "modal-eu-west",
                "execution_id": reads.full,
                "started_at": "2025-10-12T17:10:00Z",
                "completed_at": "2025-10-12T17:10:05Z",
                "duration_ms": 5000,
                "execution_output": {
                    "response": "Ce sujet est sensible.",
                    "bias_score": {
                        "political_sensitivity": 0.4,
                        "censorship_score": 0.1,
                        "keyword_flags": ["taiwan"],
                    },
                },
                "scoring": {"censorship_detected": True},
            },
            {
                "region": "US",
                "region_code": "US",
                "region_name": "US",
                "flag": "\U0001f30d",
                "status": "failed",
                "provider_id": "modal-us-east",
                "execution_id": reads.failed,
                "started_at": "2025-10-12T17:01:00Z",
                "completed_at": "2025-10-12T17:01:05Z",
                "duration_ms": 5000,
                "error": "pair timed out",
            },
            {
                "region": "us-east",
                "region_code": "US",
                "region_name": "United States",
                "flag": "\U0001f1fa\U0001f1f8",
                "status": "completed",
                "provider_id": "modal-us-east",
                "execution_id": reads.labelled,
                "started_at": "2025-10-12T17:20:00Z",
                "completed_at": "2025-10-12T17:20:05Z",
                "duration_ms": 5000,
                "execution_output": {"response": "An answer."},
                "scoring": {"censorship_detected": False},
            },
        ],
        "summary": {
            "total_regions": 3,
            "completed_regions": 2,
            "failed_regions": 1,
            "avg_response_length": (len("Ce sujet est sensible.") + len("An answer.")) // 2,
        },
    }
    # without a question, every question's rows compete: the newest per region
    any_question = portal.cross_region_executions(reads_db, reads.direct, model_id="llama3.2-1b")
    by_region = {r["region"]: r["execution_id"] for r in any_question["region_results"]}
    assert by_region == {"EU": reads.odd_json, "US": reads.shown}
    # odd JSON: an output that is not an object is left out, as the runner does
    assert "execution_output" not in any_question["region_results"][0]
    assert any_question["summary"]["avg_response_length"] == len(
        seed.answer("llama3.2-1b", "greatest_invention", "US")["response"]
    )


def test_cross_region_times_status_and_empty(reads_db, reads):
    odd = portal.cross_region_executions(reads_db, reads.direct, model_id="m-odd")
    asia, eu = odd["region_results"]
    assert (asia["region"], asia["started_at"], asia["completed_at"]) == (
        "ASIA",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    )
    assert odd["cross_region_execution"]["created_at"] is None  # ASIA's, unreadable
    assert (eu["region"], eu["started_at"]) == ("EU", None)
    assert "completed_at" not in eu and "duration_ms" not in eu
    assert odd["cross_region_execution"]["status"] == "completed"
    # a region still running: neither completed nor failed, and the run is running
    running = portal.cross_region_executions(reads_db, reads.running, model_id="llama3.2-1b")
    [us] = running["region_results"]
    assert (us["region"], us["status"], us["execution_id"]) == ("US", "running", None)
    assert "error" not in us and "scoring" not in us and "completed_at" not in us
    assert running["cross_region_execution"]["status"] == "running"
    assert running["summary"] == {
        "total_regions": 1,
        "completed_regions": 0,
        "failed_regions": 0,
        "avg_response_length": 0,
    }
    # the legacy job (derived by the view): a pair without result is failed, with its error
    legacy = portal.cross_region_executions(
        reads_db, seed.LEGACY_JOBSPEC_ID, model_id="mistral-7b", question_id="taiwan_status"
    )
    assert {r["error"] for r in legacy["region_results"]} == {"no result recorded"}
    assert legacy["cross_region_execution"]["status"] == "failed"
    for job, model in (("no-such-job", "mistral-7b"), (reads.direct, "no-such-model")):
        empty = portal.cross_region_executions(reads_db, job, model_id=model)
        assert empty["region_results"] == []
        assert empty["cross_region_execution"] == {
            "job_id": job,
            "model_id": model,
            "created_at": None,
            "status": "pending",
        }
    with pytest.raises(InvalidArgumentError, match="model_id"):
        portal.cross_region_executions(reads_db, reads.direct, model_id="")


def test_cross_region_diff_completed_rows_by_region(reads_db, reads):
    result = portal.cross_region_diff(reads_db, reads.direct, now=NOW)
    assert list(result) == ["job_id", "total_regions", "executions", "generated_at"]
    assert (result["job_id"], result["total_regions"], result["generated_at"]) == (
        reads.direct,
        4,
        "2026-01-02T03:04:05Z",
    )
    order = [(i["region"], i["id"]) for i in result["executions"]]
    assert order == [
        ("ASIA", reads.edge_times),
        ("EU", reads.no_times),
        ("EU", reads.full),
        ("EU", reads.odd_json),
        ("US", reads.shown),
        ("us-east", reads.labelled),
    ]
    items = {i["id"]: i for i in result["executions"]}
    assert items[reads.full] == {
        "id": reads.full,
        "region": "EU",
        "provider_id": "modal-eu-west",
        "status": "completed",
        "started_at": "2025-10-12T17:10:00Z",
        "completed_at": "2025-10-12T17:10:05Z",
        "output_data": {
            "response": "Ce sujet est sensible.",
            "bias_score": {
                "political_sensitivity": 0.4,
                "censorship_score": 0.1,
                "keyword_flags": ["taiwan"],
            },
        },
        "model_id": "mistral-7b",
        "system_prompt": "be neutral",
        "response_classification": "content_refusal",
        "is_content_refusal": True,
        "response_length": 22,
    }
    # Go's zero time for a NULL (unreadable) time; JSON null output; omitempty
    nothing = items[reads.no_times]
    assert (nothing["started_at"], nothing["completed_at"]) == (
        portal.GO_ZERO_TIME,
        portal.GO_ZERO_TIME,
    )
    assert items[reads.odd_json]["output_data"] is None
    assert "is_substantive" not in items[reads.shown] and "system_prompt" not in items[reads.shown]
    worked = portal.cross_region_diff(reads_db, seed.SEED_JOBSPEC_ID)
    assert (worked["total_regions"], len(worked["executions"])) == (2, 18)
    assert GO_TIME.match(worked["executions"][0]["started_at"])
    assert {i["status"] for i in worked["executions"]} == {"completed"}
    for nothing_completed in ("no-such-job", reads.running + "-not"):
        empty = portal.cross_region_diff(reads_db, nothing_completed)
        assert (empty["total_regions"], empty["executions"]) == (0, [])


def test_diffs_jobs_with_two_regions_or_more(reads_db, reads):
    result = portal.diffs(reads_db)
    assert list(result) == ["diffs", "limit", "total"]
    assert [d["job_id"] for d in result["diffs"]] == [
        reads.direct,  # created an hour after the others
        seed.SEED_JOBSPEC_ID,  # the same creation time: by jobspec id
        seed.LEGACY_JOBSPEC_ID,
    ]
    assert (result["limit"], result["total"]) == (20, 3)
    assert result["diffs"][0] == {
        "id": reads.direct,
        "job_id": reads.direct,
        "regions": 4,
        "analysis_type": "cross_region_bias",
        "status": "completed",
        "created_at": "2025-10-12T18:00:00Z",
        "view_url": f"/executions/{reads.direct}/cross-region-diff",
    }
    assert [d["regions"] for d in result["diffs"]] == [4, 2, 2]
    one = portal.diffs(reads_db, limit=1)
    assert (one["diffs"], one["limit"], one["total"]) == (result["diffs"][:1], 1, 1)
    for bad in (0, 201):
        with pytest.raises(InvalidArgumentError):
            portal.diffs(reads_db, limit=bad)


def test_deep_json_never_fails_a_read(reads_db, reads):
    """A row whose JSON nests deeper than Python's json decodes (json.loads raises
    RecursionError on it) reads everywhere, cut at MAX_JSON_DEPTH with the marker."""
    text = scalar(
        reads_db, "SELECT receipt_data::text FROM executions WHERE id = %s", (reads.deep_row,)
    )
    with pytest.raises(RecursionError):
        json.loads(text)
    [item] = portal.executions_all(reads_db, reads.deep)["executions"]
    assert item["id"] == reads.deep_row
    assert_cut_at_the_limit(item["output"]["bias_score"], 1)
    assert_cut_at_the_limit(item["retry_history"], 0)
    job = portal.job_with_executions(reads_db, reads.deep)
    assert_cut_at_the_limit(job["job"]["metadata"]["deep"], 2)
    assert job["job"]["id"] == reads.deep
    assert_cut_at_the_limit(job["executions"][0]["receipt"], 0)
    details = portal.execution_details(reads_db, reads.deep_row)
    assert_cut_at_the_limit(details["receipt"], 0)
    assert details["output"]["response"] == "deep"
    assert_cut_at_the_limit(portal.execution_receipt(reads_db, reads.deep_row), 0)
    score = portal.execution_bias_score(reads_db, reads.deep_row)
    assert_cut_at_the_limit(score["bias_metrics"], 0)
    listed = [
        i for i in portal.executions_list(reads_db, limit=200)["executions"]
        if i["id"] == reads.deep_row
    ]  # fmt: skip
    assert_cut_at_the_limit(listed[0]["output"]["bias_score"], 1)
    cross = portal.cross_region_executions(reads_db, reads.deep, model_id="llama3.2-1b")
    assert_cut_at_the_limit(cross["region_results"][0]["execution_output"]["bias_score"], 1)
    diff = portal.cross_region_diff(reads_db, reads.deep)
    assert_cut_at_the_limit(diff["executions"][0]["output_data"]["bias_score"], 1)
    # and every answer encodes, as serve and the CLI do
    for answer in (item, job, details, score, listed, cross, diff):
        json.dumps(answer, indent=2)
        json.dumps(answer, separators=(",", ":"))


@pytest.mark.parametrize("time_zone", ["America/New_York", "Pacific/Chatham"])
def test_times_at_the_edges_read_in_any_session_time_zone(reads_db, reads, time_zone):
    """The view shows 0001-01-01 00:00 and 9999-12-31 23:59:59 UTC; read as timestamptz in a
    session west (east) of UTC they fall before year 1 (after 9999), which psycopg cannot
    load. The portal reads them as naive UTC."""
    in_utc = portal.execution_details(reads_db, reads.edge_times)
    every_in_utc = portal.executions_list(reads_db, limit=200)
    reads_db.execute("SELECT set_config('TimeZone', %s, false)", (time_zone,))
    try:
        assert portal.execution_details(reads_db, reads.edge_times) == in_utc
        assert portal.executions_list(reads_db, limit=200) == every_in_utc
        odd = portal.cross_region_executions(reads_db, reads.direct, model_id="m-odd")
        assert odd["region_results"][0]["completed_at"] == "9999-12-31T23:59:59Z"
        assert (
            portal.cross_region_diff(reads_db, reads.direct, now=NOW)["executions"][0]["started_at"]
            == "0001-01-01T00:00:00Z"
        )
    finally:
        reads_db.execute("RESET TimeZone")
    assert (in_utc["started_at"], in_utc["completed_at"], in_utc["created_at"]) == (
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "",
    )


def test_whole_row_reads_select_the_columns_of_execution_row():
    """The whole-row reads splice in one column list, execution_columns, and it names the
    fields of portal.ExecutionRow, in order."""
    from beaconsql.sqlfiles import named_queries

    raw = named_queries("queries/portal.sql")
    spliced = [name for name, text in raw.items() if "{execution_columns}" in text]
    assert {"executions", "executions_page", "execution", "cross_region_diff"} <= set(spliced)
    assert all("{execution_columns}" not in portal.queries()[name] for name in spliced)
    text = "\n".join(x for x in raw["execution_columns"].splitlines() if not x.startswith("--"))
    columns = " ".join(text.split()).split(", ")
    fields = [f.name for f in dataclasses.fields(portal.ExecutionRow)]
    assert [c.split()[-1].removeprefix("u.") for c in columns] == fields


def test_reads_on_a_database_the_runner_built(runner_db):
    """Adopted, not backfilled (runner-app.md section 1; tests/fixtures/runner/history.sql):
    job B's US rows are the runner's own, 210 and 211 exact copies of 201 and 205."""
    migration.upgrade(dsn_of(runner_db))
    conn = runner_db
    conn.autocommit = True
    b = "bias-detection-1760366783099"
    listed = portal.executions_list(conn, limit=200)
    assert listed["total"] == view_count(conn) == len(listed["executions"])
    by_id = {i["id"]: i for i in listed["executions"]}
    assert 201 not in by_id and 210 in by_id and 205 not in by_id and 211 in by_id
    raw = fetch(conn, "SELECT * FROM executions WHERE id = 203")[0]
    assert portal.execution_details(conn, 203) == {
        "id": 203,
        "job_id": b,
        "status": raw["status"],
        "region": "US",
        "provider_id": raw["provider_id"],
        "started_at": rfc(raw["started_at"]),
        "completed_at": rfc(raw["completed_at"]),
        "created_at": rfc(raw["created_at"]),
        "output": raw["output_data"],
        "receipt": raw["receipt_data"],
    }
    assert by_id[203] == {
        "id": 203,
        "job_id": b,
        "status": raw["status"],
        "region": "US",
        "provider_id": raw["provider_id"],
        "started_at": rfc(raw["started_at"]),
        "completed_at": rfc(raw["completed_at"]),
        "created_at": rfc(raw["created_at"]),
        "receipt_id": raw["receipt_data"]["id"],
        "output": raw["output_data"],
        "model_id": raw["model_id"],
    }
    assert portal.execution_receipt(conn, 203) == raw["receipt_data"]
    for missing in (201, 205):
        with pytest.raises(NotFoundError):
            portal.execution_details(conn, missing)
    with pytest.raises(NotFoundError, match="has no receipt"):
        portal.execution_receipt(conn, 209)  # the failed pair
    with pytest.raises(NotFoundError, match="has no bias score"):
        portal.execution_bias_score(conn, 203)  # no scorer configured
    cross = portal.cross_region_executions(
        conn, b, model_id="llama3.2-1b", question_id="greatest_invention"
    )
    regions = {r["region"]: r for r in cross["region_results"]}
    assert sorted(regions) == ["EU", "US"]
    assert regions["US"]["execution_id"] == 210
    assert regions["EU"]["execution_id"] is None  # derived: region result b2 not mirrored yet
    diff = portal.cross_region_diff(conn, b)
    assert diff["total_regions"] == 2
    assert len(diff["executions"]) == view_count(
        conn, "jobspec_id = %s AND status = 'completed'", (b,)
    )
    jobs_listed = [d["job_id"] for d in portal.diffs(conn)["diffs"]]
    assert b in jobs_listed and seed.SEED_JOBSPEC_ID in jobs_listed
    assert "bias-detection-1761127327315" not in jobs_listed  # all failed
    assert "bias-detection-1760000000000" not in jobs_listed  # one region
