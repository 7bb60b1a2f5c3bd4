"""beaconsql.writer: recording a run through the writer, mirrored by the triggers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from conftest import dsn_of
from factories import writer_region
from helpers import scalar

from beaconsql import migration, seed, writer
from beaconsql.errors import InvalidArgumentError, NotMigratedError


def executions_rows(conn: psycopg.Connection[Any], jobspec_id: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT e.* FROM executions e JOIN jobs j ON j.id = e.job_id "
            "WHERE j.jobspec_id = %s ORDER BY e.region, e.model_id, e.question_id",
            (jobspec_id,),
        ).fetchall()


@pytest.mark.parametrize("timezone", ["America/New_York", "Asia/Tokyo"])
def test_record_with_writer_worked_example_mirrors_18_distinct_rows(db, timezone):
    db.execute(f"SET TimeZone = '{timezone}'")
    run = seed.record_with_writer(db, seed.jobspec())

    rows = executions_rows(db, seed.SEED_JOBSPEC_ID)
    assert len(rows) == 18
    assert {r["status"] for r in rows} == {"completed"}
    assert len({r["output_data"]["response"] for r in rows}) == 18
    assert len({r["receipt_data"]["id"] for r in rows}) == 18
    assert {r["mirror_evidence"] for r in rows} == {3}
    assert {r["mirror_region_result_id"] for r in rows} == set(run.region_result_ids.values())
    for r in rows:
        assert r["created_at"] == r["started_at"]
        assert r["started_at"] < r["completed_at"]
        assert r["output_data"] == seed.answer(r["model_id"], r["question_id"], r["region"])
    # Times are naive UTC whatever the session time zone: the first US pair ran 17:00:00-03Z.
    first = next(
        r
        for r in rows
        if (r["region"], r["model_id"], r["question_id"])
        == ("US", "llama3.2-1b", "greatest_invention")
    )
    assert first["started_at"] == datetime(2025, 10, 12, 17, 0, 0)
    assert first["completed_at"] == datetime(2025, 10, 12, 17, 0, 3)


def test_a_finished_pair_recorded_without_a_time_finished_when_recorded(db):
    spec = seed.jobspec(regions=["US"], models=["m1", "m2", "m3"], questions=["q1"])
    _, _, region_id = writer_region(db, spec)
    before = datetime.now(UTC)
    writer.record_pair(db, region_id, model_id="m1", question_id="q1", status="completed")
    writer.record_pair(db, region_id, model_id="m2", question_id="q1", status="failed")
    writer.record_pair(db, region_id, model_id="m3", question_id="q1", status="running")
    after = datetime.now(UTC)
    rows = {r["model_id"]: r for r in executions_rows(db, spec["id"])}
    for model_id in ("m1", "m2"):
        assert before <= rows[model_id]["completed_at"].replace(tzinfo=UTC) <= after
    assert rows["m3"]["completed_at"] is None
    ids = [r["id"] for r in rows.values()]
    version_of = "SELECT id, xmin::text FROM executions WHERE id = ANY (%s)"
    before_finish = dict(db.execute(version_of, (ids,)).fetchall())

    writer.finish_region(db, region_id, completed_at=datetime(2030, 1, 1, tzinfo=UTC))

    # Only the unfinished pair's row changes with the region's end (it becomes failed).
    after_finish = dict(db.execute(version_of, (ids,)).fetchall())
    assert {i for i in ids if after_finish[i] != before_finish[i]} == {rows["m3"]["id"]}


def test_a_pair_stamped_as_finished_now_never_finishes_before_it_started(db):
    spec = seed.jobspec(regions=["US"], models=["m1", "m2", "m3"], questions=["q1"])
    # A caller's clock behind the times it passes: the region and a pair start in an hour.
    later = datetime.now(UTC) + timedelta(hours=1)
    _, _, region_id = writer_region(db, spec, started_at=later)
    writer.record_pair(db, region_id, model_id="m1", question_id="q1", status="completed")
    writer.record_pair(
        db,
        region_id,
        model_id="m2",
        question_id="q1",
        status="failed",
        started_at=later + timedelta(minutes=5),
    )
    rows = {r["model_id"]: r for r in executions_rows(db, spec["id"])}
    assert rows["m1"]["completed_at"] == rows["m1"]["started_at"] == later.replace(tzinfo=None)
    assert rows["m2"]["completed_at"] == rows["m2"]["started_at"]
    assert rows["m2"]["started_at"] == (later + timedelta(minutes=5)).replace(tzinfo=None)
    # A region whose start no client can hold: the pair is still recorded, stamped as given.
    db.execute("UPDATE region_results SET started_at = 'infinity' WHERE id = %s", (region_id,))
    writer.record_pair(db, region_id, model_id="m3", question_id="q1", status="completed")
    elements = scalar(
        db,
        "SELECT execution_output -> 'executions' FROM region_results WHERE id = %s",
        (region_id,),
    )
    assert [e["model_id"] for e in elements] == ["m1", "m2", "m3"]
    assert elements[2]["completed_at"] is not None


def test_finish_region_writes_runner_counts_and_first_answer(db):
    spec = seed.jobspec(regions=["US"], models=["llama3.2-1b", "mistral-7b"], questions=["q1"])
    writer.create_job(db, spec)
    run_id = writer.start_run(db, spec["id"], regions=["US"])
    region_id = writer.start_region(db, run_id, "US", provider_id="modal-us-east")
    writer.record_pair(
        db,
        region_id,
        model_id="mistral-7b",
        question_id="q1",
        status="failed",
        error="timeout after 300s",
    )
    writer.record_pair(
        db,
        region_id,
        model_id="llama3.2-1b",
        question_id="q1",
        status="completed",
        output={"response": "first"},
    )
    summary = writer.finish_region(db, region_id, completed_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert summary == writer.RegionSummary("success", 1, 1, 2)
    row = db.execute(
        "SELECT status, error_message, metadata, execution_output->'data' "
        "FROM region_results WHERE id = %s",
        (region_id,),
    ).fetchone()
    assert row[0] == "success" and row[1] == ""
    assert row[2] == {"success_count": 1, "failure_count": 1, "total_executions": 2}
    assert row[3] == {"response": "first"}
    run = writer.finish_run(db, run_id)
    assert run == writer.RunSummary("completed", 1, 0)
    assert db.execute(
        "SELECT status FROM jobs WHERE jobspec_id = %s", (spec["id"],)
    ).fetchone() == ("completed",)


def test_finish_run_partial_keeps_job_status_inside_chk_jobs_status(db):
    spec = seed.jobspec(regions=["US", "EU", "ASIA"], models=["m"], questions=["q"])
    writer.create_job(db, spec)
    run_id = writer.start_run(
        db, spec["id"], regions=["US", "EU", "ASIA"], min_regions_required=1, min_success_rate=0.67
    )
    for region, status in [("US", "completed"), ("EU", "failed"), ("ASIA", "failed")]:
        rid = writer.start_region(db, run_id, region)
        writer.record_pair(db, rid, model_id="m", question_id="q", status=status)
        writer.finish_region(db, rid)
    assert writer.finish_run(db, run_id).status == "partial"
    assert db.execute(
        "SELECT status FROM jobs WHERE jobspec_id = %s", (spec["id"],)
    ).fetchone() == ("running",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_id": "", "question_id": "q", "status": "completed"}, "model_id"),
        ({"model_id": "m" * 51, "question_id": "q", "status": "completed"}, "at most 50"),
        ({"model_id": "m", "question_id": "q", "status": "success"}, "status must be one of"),
        (
            {
                "model_id": "m",
                "question_id": "q",
                "status": "completed",
                "started_at": datetime(2025, 1, 1),
            },
            "timezone-aware",
        ),
        (
            {"model_id": "m", "question_id": "q", "status": "completed", "output": {1, 2}},
            "JSON-serialisable",
        ),
    ],
)
def test_record_pair_bad_argument_raises_before_any_write(db, kwargs, message):
    spec = seed.jobspec(regions=["US"], models=["m"], questions=["q"])
    writer.create_job(db, spec)
    region_id = writer.start_region(db, writer.start_run(db, spec["id"], regions=["US"]), "US")
    before = db.execute(
        "SELECT xmin::text FROM region_results WHERE id = %s", (region_id,)
    ).fetchone()
    with pytest.raises(InvalidArgumentError, match=message):
        writer.record_pair(db, region_id, **kwargs)
    after = db.execute(
        "SELECT xmin::text FROM region_results WHERE id = %s", (region_id,)
    ).fetchone()
    assert before == after


def test_record_pair_unknown_region_result_raises(db):
    import uuid

    with pytest.raises(InvalidArgumentError, match="does not exist"):
        writer.record_pair(db, uuid.uuid4(), model_id="m", question_id="q", status="completed")


def test_create_job_rejects_spec_without_id(db):
    with pytest.raises(InvalidArgumentError, match="jobspec id"):
        writer.create_job(db, {"metadata": {}})
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output": {"response": "a\x00b"}}, r"U\+0000"),
        ({"output": {"r\x00": "key"}}, r"U\+0000"),
        ({"receipt": {"id": "\ud800"}}, "lone surrogate"),
        ({"error": "boom\x00"}, r"U\+0000"),
        ({"output": {"score": float("nan")}}, "JSON-serialisable"),
        ({"output": nested(writer.MAX_JSON_DEPTH + 1)}, "nests deeper than"),
    ],
)
def test_record_pair_unstorable_values_raise_before_any_write_and_keep_the_transaction(
    db, kwargs, message
):
    """SPEC "Values a client cannot read": text PostgreSQL cannot store (U+0000, lone
    surrogates), JSON it has no form for and nesting readers could not decode raise the writer's
    typed error naming the argument, before any write: the caller's transaction stays usable,
    and the pair recorded just before in it is kept."""
    spec = seed.jobspec("bias-detection-unstorable", regions=["US"])
    db.autocommit = False
    writer.create_job(db, spec)
    run = writer.start_run(db, spec["id"], regions=["US"])
    region = writer.start_region(db, run, "US", provider_id="modal-us-east")
    writer.record_pair(
        db, region, model_id="llama3.2-1b", question_id="greatest_invention", status="completed"
    )
    with pytest.raises(InvalidArgumentError, match=message):
        writer.record_pair(
            db,
            region,
            model_id="llama3.2-1b",
            question_id="taiwan_status",
            status="failed" if "error" in kwargs else "completed",
            **kwargs,
        )
    db.commit()  # the transaction is still usable
    db.autocommit = True
    rows = executions_rows(db, spec["id"])
    assert [(r["question_id"], r["status"]) for r in rows] == [("greatest_invention", "completed")]


def test_record_pair_accepts_nesting_up_to_the_limit_and_the_portal_reads_it(db):
    spec = seed.jobspec("bias-detection-deep", regions=["US"])
    writer.create_job(db, spec)
    run = writer.start_run(db, spec["id"], regions=["US"])
    region = writer.start_region(db, run, "US", provider_id="modal-us-east")
    deep = nested(writer.MAX_JSON_DEPTH - 1)  # inside the output object: the limit exactly
    writer.record_pair(
        db,
        region,
        model_id="llama3.2-1b",
        question_id="greatest_invention",
        status="completed",
        output={"response": "ok", "detail": deep},
    )
    [row] = executions_rows(db, spec["id"])
    assert row["output_data"]["detail"] == deep


def test_writer_finish_region_on_a_database_at_revision_0001_names_the_upgrade(
    empty_db: psycopg.Connection[Any],
) -> None:
    """The writer is beaconsql's: finish_region counts the planned pairs with the functions of
    revision 0002 (models and questions read as the mirror rule reads them). On a database at
    revision 0001 (mid-upgrade, or rolled back per docs/operations.md section 6) the writes
    before it succeed, and finish_region raises NotMigratedError naming `beaconsql upgrade`;
    after the upgrade the same call finishes the region."""
    empty_db.commit()
    empty_db.autocommit = True
    migration.upgrade(dsn_of(empty_db), "0001")
    spec = seed.jobspec("x1")
    writer.create_job(empty_db, spec)
    run_id = writer.start_run(empty_db, spec["id"], regions=["US"])
    rid = writer.start_region(empty_db, run_id, "US")
    writer.record_pair(
        empty_db,
        rid,
        model_id=seed.MODELS[0],
        question_id=seed.QUESTIONS[0],
        status="completed",
        output={"response": "ok"},
    )
    with pytest.raises(NotMigratedError, match="beaconsql upgrade"):
        writer.finish_region(empty_db, rid)
    migration.upgrade(dsn_of(empty_db), "head")
    summary = writer.finish_region(empty_db, rid)
    assert (summary.status, summary.success_count) == ("success", 1)
    assert scalar(empty_db, "SELECT status FROM region_results WHERE id = %s", (rid,)) == "success"
