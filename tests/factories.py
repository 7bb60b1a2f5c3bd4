"""Factories for raw runner-format rows, written with plain INSERTs (no writer, no mirror
helper): ``make_<thing>(conn, **overrides)`` inserts one row with sensible defaults, every
column overridable, and returns the inserted row as a dict (``RETURNING *``). A few shortcuts
record through :mod:`beaconsql.writer` instead (``writer_region``, ``record``).

Shapes follow shared/reference/runner-app.md: jobs (section 2.1, spec of section 4),
cross_region_executions (2.1), region_results (2.4, 5) and direct executions rows (2.3).
Values for jsonb columns may be any JSON value (dict, list, str, number, None); they are
wrapped with :class:`psycopg.types.json.Jsonb` (``None`` stays SQL NULL).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from helpers import T0, not_mirrored, triggers_skipped
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from beaconsql import seed, writer

# A region's start in the factories' rows, timezone-aware (region_results holds timestamptz);
# its end, and both as executions holds them (naive UTC).
STARTED_AT = T0
FINISHED_AT = STARTED_AT + timedelta(minutes=1)
NAIVE_START = STARTED_AT.replace(tzinfo=None)
NAIVE_FINISH = FINISHED_AT.replace(tzinfo=None)

_JSONB = {
    "jobs": {"jobspec_data"},
    "cross_region_executions": set(),
    "region_results": {"provider_info", "execution_output", "scoring", "metadata"},
    "executions": {"output_data", "receipt_data", "retry_history"},
}


def unique_jobspec_id(prefix: str = "bias-detection") -> str:
    """Return a jobspec id no other factory call returns."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _insert(conn: psycopg.Connection[Any], table: str, values: dict[str, Any]) -> dict[str, Any]:
    cols = list(values)
    params = [
        Jsonb(values[c]) if c in _JSONB[table] and values[c] is not None else values[c]
        for c in cols
    ]
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING *").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        sql.SQL(", ").join(sql.Placeholder() for _ in cols),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, params).fetchone()
    assert row is not None
    return row


def make_job(conn: psycopg.Connection[Any], **overrides: Any) -> dict[str, Any]:
    """Insert a jobs row as the runner's CreateJob does. Defaults: a fresh jobspec_id, the
    portal's spec (seed.jobspec) for it with regions US and EU, the worked example's 3 models
    and 3 questions; ``spec`` may be given instead of ``jobspec_data`` (its ``id`` is then
    kept in step with ``jobspec_id``)."""
    jobspec_id = overrides.pop("jobspec_id", None) or unique_jobspec_id()
    spec = overrides.pop("spec", None)
    data = overrides.pop("jobspec_data", None)
    if data is None:
        data = dict(spec, id=jobspec_id) if spec is not None else seed.jobspec(jobspec_id)
    values: dict[str, Any] = {
        "jobspec_id": jobspec_id,
        "jobspec_data": data,
        "status": "queued",
        "created_at": STARTED_AT.replace(tzinfo=None),
        "updated_at": STARTED_AT.replace(tzinfo=None),
    }
    values.update(overrides)
    return _insert(conn, "jobs", values)


def make_run(conn: psycopg.Connection[Any], **overrides: Any) -> dict[str, Any]:
    """Insert a cross_region_executions row (status running). Default jobspec_id: a fresh one
    with no jobs row (pass ``jobspec_id=job["jobspec_id"]`` to attach it to a job)."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "jobspec_id": unique_jobspec_id(),
        "total_regions": 2,
        "min_regions_required": 1,
        "min_success_rate": 0.67,
        "status": "running",
        "started_at": STARTED_AT,
    }
    values.update(overrides)
    return _insert(conn, "cross_region_executions", values)


def make_region_result(conn: psycopg.Connection[Any], **overrides: Any) -> dict[str, Any]:
    """Insert a region_results row as the runner's first INSERT does (status running, region
    US, provider modal-us-east). Default run: a fresh one (``make_run``) with no job."""
    if "cross_region_execution_id" not in overrides:
        overrides["cross_region_execution_id"] = make_run(conn)["id"]
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "region": "US",
        "provider_id": "modal-us-east",
        "status": "running",
        "started_at": STARTED_AT,
    }
    values.update(overrides)
    return _insert(conn, "region_results", values)


def make_direct_execution(conn: psycopg.Connection[Any], **overrides: Any) -> dict[str, Any]:
    """Insert a direct executions row as the runner's callback does (section 2.3): region US,
    provider modal-us-east, completed, started_at = the region's start, created_at =
    started_at, an answer in output_data, cross_region_execution_id NULL. ``job_id`` is
    required unless given as None explicitly."""
    if "job_id" not in overrides:
        raise TypeError("make_direct_execution needs job_id (None for a row without a job)")
    region = overrides.get("region", "US")
    model_id = overrides.get("model_id", "llama3.2-1b")
    question_id = overrides.get("question_id", "greatest_invention")
    started = overrides.get("started_at", STARTED_AT.replace(tzinfo=None))
    values: dict[str, Any] = {
        "provider_id": seed.PROVIDERS.get(region, ""),
        "region": region,
        "status": "completed",
        "started_at": started,
        "completed_at": started + timedelta(seconds=5),
        "created_at": started,
        "output_data": seed.answer(model_id, question_id, region),
        "model_id": model_id,
        "question_id": question_id,
    }
    values.update(overrides)
    return _insert(conn, "executions", values)


def element(
    model_id: str, question_id: str, status: str | None = "completed", **fields: Any
) -> dict[str, Any]:
    """Return one per-pair result element of execution_output.executions (the writer's
    format), completed with an answer by default; ``fields`` override or add keys."""
    el: dict[str, Any] = {
        "model_id": model_id,
        "question_id": question_id,
        "status": status,
        "started_at": "2025-10-12T17:00:00Z",
        "completed_at": "2025-10-12T17:00:03Z",
        "output": {"response": f"answer {model_id}/{question_id}"},
        "receipt": {"id": f"receipt-{model_id}-{question_id}"},
        "error": None,
    }
    el.update(fields)
    return el


def small_spec(
    models: Any,
    questions: Any,
    regions: tuple[str, ...] = ("US", "EU"),
    jobspec_id: str | None = None,
) -> dict[str, Any]:
    """A portal spec whose metadata.models / questions are exactly *models* / *questions*
    (any JSON, malformed included; a tuple is written as a list); metadata.model is the first
    model when that is a string."""
    models = list(models) if isinstance(models, tuple) else models
    questions = list(questions) if isinstance(questions, tuple) else questions
    spec = seed.jobspec(
        jobspec_id or unique_jobspec_id(),
        regions=list(regions),
        models=["llama3.2-1b"],
        questions=["q"],
    )
    spec["metadata"]["models"] = models
    spec["metadata"]["model"] = (
        models[0]
        if isinstance(models, list) and models and isinstance(models[0], str)
        else "llama3.2-1b"
    )
    spec["questions"] = questions
    return spec


def job_and_run(
    conn: psycopg.Connection[Any], spec: dict[str, Any] | None = None, **spec_kwargs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A jobs row of *spec* (else ``small_spec(**spec_kwargs)``) and a run of it, raw."""
    spec = spec if spec is not None else small_spec(**spec_kwargs)
    job = make_job(conn, jobspec_id=spec["id"], jobspec_data=spec)
    run = make_run(conn, jobspec_id=job["jobspec_id"])
    return job, run


def writer_region(
    conn: psycopg.Connection[Any],
    spec: dict[str, Any],
    region: str = "US",
    started_at: datetime = STARTED_AT,
) -> tuple[int, uuid.UUID, uuid.UUID]:
    """A job recorded through the writer with one started region; returns (job id, run id,
    region result id)."""
    job_id = writer.create_job(conn, spec)
    run_id = writer.start_run(conn, spec["id"], regions=[region], started_at=started_at)
    region_id = writer.start_region(
        conn, run_id, region, provider_id=seed.PROVIDERS[region], started_at=started_at
    )
    return job_id, run_id, region_id


def record(
    conn: psycopg.Connection[Any],
    region_id: uuid.UUID,
    model_id: str,
    question_id: str,
    status: str = "completed",
    **kwargs: Any,
) -> None:
    """Record one pair through the writer: started at STARTED_AT, finished 3 s later, with an
    answer when completed; *kwargs* override (``writer.record_pair``'s keywords)."""
    kwargs.setdefault("started_at", STARTED_AT)
    kwargs.setdefault("completed_at", STARTED_AT + timedelta(seconds=3))
    if status == "completed":
        kwargs.setdefault("output", {"response": f"answer {model_id}/{question_id}"})
    writer.record_pair(
        conn, region_id, model_id=model_id, question_id=question_id, status=status, **kwargs
    )


def record_running(
    conn: psycopg.Connection[Any], region_id: uuid.UUID, *pairs_: tuple[str, str]
) -> None:
    """Record each pair running (the writer at a pair's start): rows the mirror stores."""
    for model_id, question_id in pairs_:
        record(conn, region_id, model_id, question_id, "running", completed_at=None)


def legacy_output(model: str = "llama3.2-1b", text: str = "An answer.") -> dict[str, Any]:
    return {
        "data": {
            "response": text,
            "metadata": {"model": model, "region": "us-east", "provider_type": "modal"},
        },
        "hash": "",
    }


# History of every shape, written with the triggers skipped


@dataclass
class History:
    """What write_history recorded (jobspec ids by shape, and some ids)."""

    jobs: dict[str, str]
    job_ids: dict[str, int | None]
    region_results: dict[str, uuid.UUID]


def write_history(conn: psycopg.Connection[Any]) -> History:
    """Record history of every shape the SPEC names, with every trigger skipped."""
    jobs: dict[str, str] = {}
    job_ids: dict[str, int | None] = {}
    rr: dict[str, uuid.UUID] = {}
    finished = T0 + timedelta(minutes=2)
    with triggers_skipped(conn):
        # 1. The runner's legacy region rows: the worked example's legacy job (18 pairs).
        spec = seed.jobspec(unique_jobspec_id("legacy"))
        run = seed.record_legacy(conn, spec)
        jobs["legacy"], job_ids["legacy"] = spec["id"], run.job_id
        rr["legacy_us"], rr["legacy_eu"] = run.region_result_ids["US"], run.region_result_ids["EU"]

        # 2. Per-pair elements through the writer (the element format), 2 x 2 x 2.
        spec = small_spec(["m1", "m2"], ["q1", "q2"])
        run = seed.record_with_writer(conn, spec)
        jobs["writer"], job_ids["writer"] = spec["id"], run.job_id
        rr["writer_us"] = run.region_result_ids["US"]

        # 3. Direct rows with duplicates beside legacy region rows (the runner's dual write):
        #    US has the legacy pair twice and another pair once, a row with '' question and a
        #    row with NULL question (neither owns a key the rule yields); a row without a job.
        spec = seed.jobspec(unique_jobspec_id("direct"))
        run = seed.record_legacy(conn, spec)
        jobs["direct"], job_ids["direct"] = spec["id"], run.job_id
        rr["direct_us"] = run.region_result_ids["US"]
        for _ in range(2):
            make_direct_execution(
                conn,
                job_id=run.job_id,
                region="US",
                model_id="llama3.2-1b",
                question_id="greatest_invention",
            )
        make_direct_execution(
            conn, job_id=run.job_id, region="US", model_id="mistral-7b", question_id="taiwan_status"
        )
        make_direct_execution(
            conn, job_id=run.job_id, region="US", model_id="qwen2.5-1.5b", question_id=""
        )
        make_direct_execution(
            conn, job_id=run.job_id, region="EU", model_id="qwen2.5-1.5b", question_id=None
        )
        make_direct_execution(
            conn, job_id=None, region="US", model_id="llama3.2-1b", question_id="greatest_invention"
        )

        # 4. A region that timed out after 4 of its 9 pairs; the runner wrote those 4.
        spec = seed.jobspec(unique_jobspec_id("timeout"), regions=["US"])
        job = make_job(conn, jobspec_id=spec["id"], jobspec_data=spec)
        x = make_run(conn, jobspec_id=spec["id"], total_regions=1)
        r = make_region_result(
            conn,
            cross_region_execution_id=x["id"],
            status="timeout",
            started_at=T0,
            completed_at=finished,
            error_message="provider timeout after 600s",
            execution_output=legacy_output("mistral-7b"),
        )
        jobs["timeout"], job_ids["timeout"], rr["timeout"] = spec["id"], job["id"], r["id"]
        for m, q in [
            ("llama3.2-1b", "greatest_invention"),
            ("llama3.2-1b", "tiananmen_neutral"),
            ("llama3.2-1b", "taiwan_status"),
            ("mistral-7b", "greatest_invention"),
        ]:
            make_direct_execution(conn, job_id=job["id"], region="US", model_id=m, question_id=q)

        # 5. A missing job: the run's jobspec_id has no jobs row.
        x = make_run(conn)
        r = make_region_result(
            conn,
            cross_region_execution_id=x["id"],
            status="success",
            completed_at=finished,
            model_id="qwen2.5-1.5b",
            error_message="",
            execution_output=legacy_output("mistral-7b"),
        )
        jobs["missing"], job_ids["missing"], rr["missing"] = x["jobspec_id"], None, r["id"]
        x = make_run(conn)
        r = make_region_result(
            conn,
            cross_region_execution_id=x["id"],
            status="failed",
            completed_at=finished,
            error_message="all executions failed",
        )
        rr["missing_failed"] = r["id"]

        # 6. Malformed specs: models a string, questions an object (fallbacks) ...
        spec = small_spec(
            "llama3.2-1b,qwen2.5-1.5b", {"taiwan_status": "What is Taiwan?"}, regions=("US",)
        )
        spec["metadata"]["model"] = "qwen2.5-1.5b"
        job = make_job(conn, jobspec_id=spec["id"], jobspec_data=spec)
        x = make_run(conn, jobspec_id=spec["id"])
        r = make_region_result(
            conn,
            cross_region_execution_id=x["id"],
            status="success",
            completed_at=finished,
            error_message="",
            execution_output=legacy_output("qwen2.5-1.5b"),
        )
        jobs["malformed"], job_ids["malformed"], rr["malformed"] = spec["id"], job["id"], r["id"]
        #    ... and arrays of mixed entries: objects by id / name / model_id, junk, duplicates.
        spec = small_spec(
            [{"id": "m-a"}, {"name": "m-b"}, 42, "", {"model_id": "m-c"}, "m-a", {"id": ""}],
            ["q1", {"id": "q2"}, "", 7, "q1", {"text": "no id"}],
        )
        job = make_job(conn, jobspec_id=spec["id"], jobspec_data=spec)
        x = make_run(conn, jobspec_id=spec["id"])
        jobs["mixed"], job_ids["mixed"] = spec["id"], job["id"]
        # Every element shape, in a finished region whose status needs trimming.
        r = make_region_result(
            conn,
            cross_region_execution_id=x["id"],
            status="  Success ",
            provider_id=None,
            completed_at=finished,
            error_message="",
            execution_output={
                "executions": [
                    element("m-a", "q1"),
                    element(
                        "m-a",
                        "q2",
                        "failed",
                        output=None,
                        receipt=None,
                        error="boom",
                        started_at="2025-10-12T19:00:00+02:00",
                        completed_at="2025-10-12T19:00:09+02:00",
                    ),
                    element("m-b", "q1"),
                    # last wins
                    element("m-b", "q1", "Failed", output=None, error="second try failed"),
                    {"model_id": "m-b", "status": "completed"},  # no question_id: skipped
                    element("m-x", "q9"),  # outside models x questions: still mirrored
                    element("m-c", "q1", "pending", completed_at=None, output=None, receipt=None),
                    element("m-c", "q2", "exploded"),  # unknown, with completed_at: failed
                    element(
                        "m-b",
                        "q2",
                        started_at="2025-10-12T18:00:00",
                        completed_at="2025-10-12 18:00:04.5",
                    ),  # no zone: UTC
                    element(
                        "m-y", "q1", started_at="not a time", completed_at="2025-02-30T00:00:00Z"
                    ),
                    element("m" * 51, "q1"),  # over-long model_id: not mirrored
                    42,
                    element("", "q1"),
                ]
            },
        )
        rr["elements"] = r["id"]
        # A cancelled region with a running element and missing pairs.
        r = make_region_result(
            conn,
            cross_region_execution_id=x["id"],
            region="EU",
            provider_id="modal-eu-west",
            status="cancelled",
            completed_at=finished,
            error_message="",
            execution_output={"executions": [element("m-a", "q1", "running", completed_at=None)]},
        )
        rr["cancelled"] = r["id"]
        # An unfinished region: an element of unknown status and no completed_at, one done.
        r = make_region_result(
            conn,
            cross_region_execution_id=x["id"],
            region="ASIA",
            status="Processing",
            provider_id="modal-asia-pacific",
            execution_output={
                "executions": [
                    element("m-a", "q1", "weird", completed_at=None),
                    element("m-b", "q2", completed_at=None),
                ]
            },
        )
        rr["processing"] = r["id"]

        # 7. A running region as the runner's first INSERT leaves it (provider_id NULL).
        spec = seed.jobspec(unique_jobspec_id("running"))
        job = make_job(conn, jobspec_id=spec["id"], jobspec_data=spec)
        x = make_run(conn, jobspec_id=spec["id"])
        r = make_region_result(conn, cross_region_execution_id=x["id"], provider_id=None)
        jobs["running"], job_ids["running"], rr["running"] = spec["id"], job["id"], r["id"]

        # 8. Region statuses outside the vocabulary, finished and not; queued; data null;
        #    a failed region with an error message; all in one job of 1 model x 2 questions.
        spec = small_spec(["m1"], ["q1", "q2"])
        job = make_job(conn, jobspec_id=spec["id"], jobspec_data=spec)
        jobs["statuses"], job_ids["statuses"] = spec["id"], job["id"]
        for name, fields in {
            "unknown_finished": {
                "status": "exploded",
                "completed_at": finished,
                "error_message": "kaboom",
            },
            "unknown_unfinished": {"status": "limbo"},
            "queued": {"status": "QUEUED"},
            "data_null": {
                "status": "success",
                "completed_at": finished,
                "error_message": "",
                "execution_output": {"data": None, "hash": ""},
            },
            "failed_with_error": {
                "status": "error",
                "completed_at": finished,
                "error_message": "GPU out of memory",
                "execution_output": legacy_output("m1"),
            },
        }.items():
            # Distinct times per run: tied candidates are a separate test (see the xfail).
            x = make_run(conn, jobspec_id=spec["id"])
            shift = timedelta(seconds=len(rr))
            if "completed_at" in fields:
                fields["completed_at"] += shift
            rr[name] = make_region_result(
                conn, cross_region_execution_id=x["id"], started_at=T0 + shift, **fields
            )["id"]

        # 9. Two runs of one job yield the same keys: each keeps its own mirrored rows.
        spec = small_spec(["m1", "m2"], ["q1"], regions=("US",))
        job = make_job(conn, jobspec_id=spec["id"], jobspec_data=spec)
        jobs["two_runs"], job_ids["two_runs"] = spec["id"], job["id"]
        for k in range(2):
            x = make_run(conn, jobspec_id=spec["id"], started_at=T0 + timedelta(hours=k))
            rr[f"two_runs_{k}"] = make_region_result(
                conn,
                cross_region_execution_id=x["id"],
                status="success",
                started_at=T0 + timedelta(hours=k),
                completed_at=T0 + timedelta(hours=k, minutes=1),
                error_message="",
                execution_output=legacy_output("m2", f"run {k}"),
            )["id"]
        # 10. More shapes: outputs that are not objects, a malformed executions value beside
        #     a legacy answer, element statuses null and cased, times with fractions, offsets,
        #     no seconds or a date only; specs without metadata, or with only unusable models.
        spec = small_spec([42, ""], ["q1"], regions=("US",))
        spec["metadata"]["model"] = "m-only"
        job = make_job(conn, jobspec_id=spec["id"], jobspec_data=spec)
        x = make_run(conn, jobspec_id=spec["id"])
        jobs["more"], job_ids["more"] = spec["id"], job["id"]
        for name, fields in {
            "output_string": {"execution_output": "garbage"},
            "output_array": {"execution_output": [1, 2]},
            "executions_object": {
                "execution_output": {**legacy_output("m-only"), "executions": {"m-only": "done"}}
            },
            "element_times": {
                "execution_output": {
                    "executions": [
                        element(
                            "m-only",
                            "q1",
                            None,
                            started_at="2025-10-12T17:00:00.123456Z",
                            completed_at="2025-10-12T22:30:01+05:30",
                        ),
                        element(
                            "m-only",
                            "q2",
                            "DONE",
                            started_at="2025-10-12T17:00Z",
                            completed_at="2025-10-13",
                        ),
                        element(
                            "m-only",
                            "q3",
                            "Canceled",
                            started_at=None,
                            completed_at=None,
                            output="plain text",
                            error="",
                        ),
                    ]
                }
            },
        }.items():
            shift = timedelta(seconds=len(rr))
            rr[name] = make_region_result(
                conn,
                cross_region_execution_id=x["id"],
                status="success",
                started_at=T0 + shift,
                completed_at=finished + shift,
                error_message="",
                **fields,
            )["id"]
        for name, data in {
            "no_metadata": {"id": "x"},
            "empty_model": {"metadata": {"model": ""}, "questions": []},
        }.items():
            job = make_job(conn, jobspec_data=data)
            x = make_run(conn, jobspec_id=job["jobspec_id"])
            rr[name] = make_region_result(
                conn,
                cross_region_execution_id=x["id"],
                model_id="qwen2.5-1.5b",
                status="done",
                completed_at=finished,
                error_message="",
                execution_output=legacy_output("mistral-7b"),
            )["id"]
    assert not_mirrored(conn) == {row[0] for row in conn.execute("SELECT id FROM region_results")}
    return History(jobs, job_ids, rr)


BULK_SPEC = {
    "metadata": {"models": ["llama3.2-1b", "mistral-7b", "qwen2.5-1.5b"], "model": "llama3.2-1b"},
    "questions": ["greatest_invention", "tiananmen_neutral", "taiwan_status"],
    "constraints": {"regions": ["US", "EU"]},
}
# Region result classes of write_bulk_legacy, by (g + region index) mod 10.
BULK_CLASSES = {
    0: "legacy_llama",
    1: "legacy_mistral",
    2: "legacy_qwen",
    3: "legacy_llama",
    4: "legacy_unknown_model",
    5: "legacy_mistral",
    6: "failed",
    7: "failed",
    8: "running",
    9: "cancelled",
}


def write_bulk_legacy(conn: psycopg.Connection[Any], prefix: str, n_jobs: int) -> int:
    """Set-based: *n_jobs* jobs of 3 models x 3 questions, one run each, two legacy region
    results per run (US, EU) of the classes in BULK_CLASSES, every trigger skipped. Returns the
    number of region results written."""
    params = {"prefix": prefix, "n": n_jobs, "spec": Jsonb(BULK_SPEC), "t0": T0}
    with triggers_skipped(conn):
        conn.execute(
            "INSERT INTO jobs (jobspec_id, jobspec_data, status, created_at, updated_at) "
            "SELECT %(prefix)s || '-' || g, "
            "       %(spec)s::jsonb || jsonb_build_object('id', %(prefix)s || '-' || g), "
            "       'completed', %(t0)s::timestamptz AT TIME ZONE 'UTC', "
            "       %(t0)s::timestamptz AT TIME ZONE 'UTC' "
            "FROM generate_series(1, %(n)s) g",
            params,
        )
        conn.execute(
            "INSERT INTO cross_region_executions "
            "    (id, jobspec_id, total_regions, status, started_at) "
            "SELECT md5('run ' || %(prefix)s || g)::uuid, %(prefix)s || '-' || g, 2, 'completed', "
            "       %(t0)s::timestamptz + g * interval '1 second' "
            "FROM generate_series(1, %(n)s) g",
            params,
        )
        conn.execute(
            """
            INSERT INTO region_results (id, cross_region_execution_id, region, provider_id, status,
                started_at, completed_at, duration_ms, execution_output, error_message, metadata,
                created_at, updated_at)
            SELECT md5('rr ' || %(prefix)s || g || ' ' || ri)::uuid,
                   md5('run ' || %(prefix)s || g)::uuid,
                   (ARRAY['US', 'EU'])[ri + 1],
                   (ARRAY['modal-us-east', 'modal-eu-west'])[ri + 1],
                   CASE WHEN c <= 5 THEN 'success' WHEN c <= 7 THEN 'failed'
                        WHEN c = 8 THEN 'running' ELSE 'cancelled' END,
                   st,
                   CASE WHEN c <> 8 THEN st + interval '45 seconds' END,
                   CASE WHEN c <> 8 THEN 45000 END,
                   CASE WHEN c <= 5 THEN jsonb_build_object(
                            'data', jsonb_build_object(
                                'response', 'answer ' || g || ' ' || ri,
                                'metadata', jsonb_build_object(
                                    'model', (ARRAY['llama3.2-1b', 'mistral-7b',
                                                    'qwen2.5-1.5b', 'llama3.2-1b',
                                                    'gpt-unknown', 'mistral-7b'])[c + 1],
                                    'provider_type', 'modal')),
                            'hash', '') END,
                   CASE WHEN c <= 5 THEN '' WHEN c <= 7 THEN 'all executions failed'
                        WHEN c = 9 THEN 'cancelled by user' END,
                   '{"success_count": 1, "failure_count": 0, "total_executions": 1}'::jsonb,
                   st, st
            FROM generate_series(1, %(n)s) g
            CROSS JOIN generate_series(0, 1) ri
            CROSS JOIN LATERAL (SELECT (g + ri) %% 10 AS c,
                                       %(t0)s::timestamptz + g * interval '1 second'
                                       + ri * interval '1 minute' AS st) v
            """,
            params,
        )
    return 2 * n_jobs


def bulk_expected_counts(n_jobs: int) -> Counter[tuple[str, int]]:
    """(status, evidence) counts of the rows the mirror stores for write_bulk_legacy(n_jobs), by
    arithmetic (a running region stores none: its placeholders are derived by the view)."""
    classes = Counter(BULK_CLASSES[(g + ri) % 10] for g in range(1, n_jobs + 1) for ri in (0, 1))
    out: Counter[tuple[str, int]] = Counter()
    for name, n in classes.items():
        if name.startswith("legacy"):
            out[("completed", 2)] += n
            out[("failed", 1)] += 8 * n
        elif name == "failed":
            out[("failed", 1)] += 9 * n
        elif name == "running":
            pass
        else:
            out[("cancelled", 1)] += 9 * n
    return out


# ============================================================================================
# Exactness
# ============================================================================================


def bulk_stored_rows(n_jobs: int) -> int:
    """How many rows the mirror stores for write_bulk_legacy(n_jobs)."""
    return sum(bulk_expected_counts(n_jobs).values())


# ============================================================================================
# The portal's reads
# ============================================================================================

# A JSON text nested DEEP_LEVELS levels, deeper than Python's json decodes (about 1000): what
# another writer than beaconsql's may store (its own writer refuses it).
DEEP_LEVELS = 1200


@dataclass(frozen=True)
class Reads:
    """What :func:`write_reads` recorded: jobspec ids and execution ids by role."""

    direct: str  # direct rows only (the runner's dual write, and rows by hand)
    running: str  # through the writer, one pair recorded, the region still running
    deep: str  # one row and a spec whose JSON nests DEEP_LEVELS deep
    full: int  # EU mistral-7b taiwan_status, completed: bias score, receipt, a refusal
    failed: int  # US mistral-7b taiwan_status, failed: no output, no receipt
    labelled: int  # us-east mistral-7b taiwan_status, completed: a region the runner labels
    shown: int  # US llama3.2-1b greatest_invention: the newer of two identical rows
    hidden: int  # the older one, which the view hides
    odd_json: int  # EU llama3.2-1b greatest_invention: output JSON null, receipt an array
    edge_times: int  # ASIA m-odd q-odd: times at the edges clients hold, created_at infinite
    no_times: int  # EU m-odd q-odd: started_at and completed_at infinite
    no_job: int  # a direct row without a job
    deep_row: int


def write_reads(conn: psycopg.Connection[Any]) -> Reads:
    """Record, besides the worked example (through the writer) and the legacy job (derived by
    the view, its region results not mirrored), a job of direct rows covering each field of
    the portal's reads, a running job, a job of deep JSON and a row of no job. *conn* is in
    autocommit (each statement commits, as the runner's)."""
    seed.record_with_writer(conn, seed.jobspec())
    with triggers_skipped(conn, ("region_results",)):
        seed.record_legacy(conn, seed.jobspec(seed.LEGACY_JOBSPEC_ID))

    job = make_job(
        conn,
        jobspec_id="bias-detection-1761000000000",
        created_at=NAIVE_START + timedelta(hours=1),
    )

    def direct(minutes: float, **overrides: Any) -> int:
        at = NAIVE_START + timedelta(minutes=minutes)
        values: dict[str, Any] = {"started_at": at, "created_at": at}
        values.update(overrides)
        return int(make_direct_execution(conn, job_id=job["id"], **values)["id"])

    full = direct(
        10,
        region="EU",
        model_id="mistral-7b",
        question_id="taiwan_status",
        output_data={
            "response": "Ce sujet est sensible.",
            "bias_score": {
                "political_sensitivity": 0.4,
                "censorship_score": 0.1,
                "keyword_flags": ["taiwan"],
            },
        },
        receipt_data={"schema_version": "v0.1.0", "id": "receipt-full"},
        system_prompt="be neutral",
        response_classification="content_refusal",
        is_content_refusal=True,
        response_length=22,
    )
    failed = direct(
        1,
        region="US",
        model_id="mistral-7b",
        question_id="taiwan_status",
        status="failed",
        output_data=None,
        original_error="pair timed out",
    )
    labelled = direct(
        20,
        region="us-east",
        provider_id="modal-us-east",
        model_id="mistral-7b",
        question_id="taiwan_status",
        output_data={"response": "An answer."},
    )
    hidden = direct(0, region="US", model_id="llama3.2-1b", question_id="greatest_invention")
    shown = direct(0, region="US", model_id="llama3.2-1b", question_id="greatest_invention")
    odd_json = direct(
        5,
        region="EU",
        model_id="llama3.2-1b",
        question_id="greatest_invention",
        receipt_data=[1, 2],
    )
    conn.execute("UPDATE executions SET output_data = 'null'::jsonb WHERE id = %s", (odd_json,))
    edge_times = direct(0, region="ASIA", model_id="m-odd", question_id="q-odd")
    conn.execute(
        "UPDATE executions SET started_at = '0001-01-01 00:00:00', "
        "completed_at = '9999-12-31 23:59:59', created_at = 'infinity', "
        "last_retry_at = '-infinity' WHERE id = %s",
        (edge_times,),
    )
    no_times = direct(30, region="EU", model_id="m-odd", question_id="q-odd")
    conn.execute(
        "UPDATE executions SET started_at = 'infinity', completed_at = '-infinity' WHERE id = %s",
        (no_times,),
    )
    no_job = int(
        make_direct_execution(
            conn,
            job_id=None,
            question_id="q-no-job",
            created_at=NAIVE_START - timedelta(hours=1),
        )["id"]
    )

    running = seed.jobspec("bias-detection-1761100000000")
    writer.create_job(conn, running, created_at=STARTED_AT - timedelta(hours=1))
    run_id = writer.start_run(conn, running["id"], regions=["US", "EU"], started_at=STARTED_AT)
    us = writer.start_region(conn, run_id, "US", provider_id="modal-us-east", started_at=STARTED_AT)
    writer.record_pair(
        conn,
        us,
        model_id="mistral-7b",
        question_id="taiwan_status",
        status="completed",
        started_at=STARTED_AT,
        completed_at=FINISHED_AT,
        output=seed.answer("mistral-7b", "taiwan_status", "US"),
    )

    deep = make_job(
        conn,
        jobspec_id="bias-detection-1761200000000",
        created_at=NAIVE_START - timedelta(hours=2),
    )
    levels = {"n": DEEP_LEVELS, "id": deep["id"]}
    conn.execute(
        "UPDATE jobs SET jobspec_data = jsonb_set(jobspec_data, '{metadata,deep}', "
        "(repeat('[', %(n)s) || '1' || repeat(']', %(n)s))::jsonb) WHERE id = %(id)s",
        levels,
    )
    deep_row = int(make_direct_execution(conn, job_id=deep["id"])["id"])
    conn.execute(
        "WITH d AS (SELECT (repeat('[', %(n)s) || '1' || repeat(']', %(n)s))::jsonb AS v) "
        "UPDATE executions SET output_data = jsonb_build_object('response', 'deep', "
        "'bias_score', d.v), receipt_data = d.v, retry_history = d.v FROM d WHERE id = %(id)s",
        {**levels, "id": deep_row},
    )
    return Reads(
        direct=job["jobspec_id"],
        running=running["id"],
        deep=deep["jobspec_id"],
        full=full,
        failed=failed,
        labelled=labelled,
        shown=shown,
        hidden=hidden,
        odd_json=odd_json,
        edge_times=edge_times,
        no_times=no_times,
        no_job=no_job,
        deep_row=deep_row,
    )
