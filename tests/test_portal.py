"""The portal's reads (``beaconsql.portal``) against the contract (SPEC "Portal reads",
"Worked example"; runner-app.md sections 3.1 and 3.2): the runner's field names and formats,
the SPEC's order, ``[]`` not ``null``, limit/offset, and progress.

Tests that assert the contract where the implementation deviates are marked
``xfail(strict=True)`` with the reason; each carries a minimal repro in its docstring.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from factories import (
    STARTED_AT,
    element,
    make_direct_execution,
    make_job,
    make_region_result,
    make_run,
)
from helpers import fetch

from beaconsql import portal, seed, writer
from beaconsql.errors import InvalidArgumentError

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
