"""The worked example's jobs (SPEC "Worked example"), recorded the two ways a run reaches the
database: through :mod:`beaconsql.writer` (one element per pair), or the runner's legacy way
(one region row holding one answer, no executions rows). Used by ``beaconsql demo``, the
tests and the benchmarks; shapes from runner-app.md sections 4 and 5.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from beaconsql import writer

SEED_JOBSPEC_ID = "bias-detection-1760288315095"
LEGACY_JOBSPEC_ID = "bias-detection-1760366783099"
REGIONS = ("US", "EU")
MODELS = ("llama3.2-1b", "mistral-7b", "qwen2.5-1.5b")
QUESTIONS = ("greatest_invention", "tiananmen_neutral", "taiwan_status")
PROVIDERS = {"US": "modal-us-east", "EU": "modal-eu-west", "ASIA": "modal-asia-pacific"}
SEED_STARTED_AT = datetime(2025, 10, 12, 17, 0, 0, tzinfo=UTC)


def jobspec(
    jobspec_id: str = SEED_JOBSPEC_ID,
    *,
    regions: Sequence[str] = REGIONS,
    models: Sequence[str] = MODELS,
    questions: Sequence[str] = QUESTIONS,
    created_at: datetime = SEED_STARTED_AT,
) -> dict[str, Any]:
    """Return a JobSpec as the portal sends it (runner-app.md section 4, "Portal spec example")."""
    return {
        "id": jobspec_id,
        "version": "v1",
        "benchmark": {
            "name": "bias-detection",
            "version": "v1",
            "container": {"image": "ghcr.io/project-beacon/bias-detection", "tag": "latest"},
            "input": {"type": "prompt", "hash": "sha256:placeholder"},
        },
        "constraints": {
            "regions": list(regions),
            "min_regions": max(1, int(len(regions) * 0.67)),
            "timeout": 600_000_000_000,
            "provider_timeout": 600_000_000_000,
        },
        "metadata": {
            "created_by": "portal",
            "execution_type": "cross-region",
            "multi_model": len(models) > 1,
            "models": list(models),
            "model": models[0],
            "model_name": models[0],
            "total_executions_expected": len(regions) * len(models) * len(questions),
        },
        "questions": list(questions),
        "runs": 1,
        "created_at": created_at.isoformat().replace("+00:00", "Z"),
    }


def answer(model_id: str, question_id: str, region: str) -> dict[str, Any]:
    """Return a pair's output_data: ``{"response", "metadata"}`` (runner-app.md section 5)."""
    return {
        "response": f"[{model_id} in {region}] An answer to {question_id}.",
        "metadata": {"provider_type": "modal", "region": region, "model": model_id},
    }


def receipt(
    jobspec_id: str, model_id: str, question_id: str, region: str, n: int
) -> dict[str, Any]:
    """Return a pair's receipt_data, the runner's unsigned receipt shape (section 5)."""
    return {
        "schema_version": "v0.1.0",
        "id": f"receipt-{jobspec_id}-{region}-{model_id}-{question_id}-{n}",
        "jobspec_id": jobspec_id,
        "execution_details": {
            "provider_id": PROVIDERS.get(region, region),
            "region": region,
            "status": "completed",
        },
        "output": {"data": answer(model_id, question_id, region), "hash": ""},
        "provenance": {"execution_env": {"region": region, "model": model_id}},
        "signature": "",
        "public_key": "",
    }


@dataclass(frozen=True)
class RecordedRun:
    """Ids of a recorded run: the jobs row, the run and its region results by region."""

    job_id: int | None
    run_id: uuid.UUID
    region_result_ids: dict[str, uuid.UUID]


def record_with_writer(
    conn: psycopg.Connection[Any],
    spec: dict[str, Any],
    *,
    started_at: datetime = SEED_STARTED_AT,
    create_job: bool = True,
) -> RecordedRun:
    """Record every pair of *spec* as completed through the writer; return the ids.

    Regions run one after another, models outside questions, a few seconds per pair, as the
    runner's executor does (runner-app.md section 2.2). Each pair has its own answer.
    """
    job_id = writer.create_job(conn, spec, created_at=started_at) if create_job else None
    regions = spec["constraints"]["regions"]
    run_id = writer.start_run(conn, spec["id"], regions=regions, started_at=started_at)
    clock = started_at
    ids: dict[str, uuid.UUID] = {}
    n = 0
    for region in regions:
        region_start = clock
        region_id = writer.start_region(
            conn, run_id, region, provider_id=PROVIDERS.get(region), started_at=region_start
        )
        ids[region] = region_id
        for model_id in spec["metadata"]["models"]:
            for question_id in spec["questions"]:
                n += 1
                pair_start = clock
                clock += timedelta(seconds=3)
                writer.record_pair(
                    conn,
                    region_id,
                    model_id=model_id,
                    question_id=question_id,
                    status="completed",
                    started_at=pair_start,
                    completed_at=clock,
                    output=answer(model_id, question_id, region),
                    receipt=receipt(spec["id"], model_id, question_id, region, n),
                )
        clock += timedelta(seconds=1)
        writer.finish_region(conn, region_id, completed_at=clock)
    writer.finish_run(conn, run_id, completed_at=clock)
    return RecordedRun(job_id=job_id, run_id=run_id, region_result_ids=ids)


def record_legacy(
    conn: psycopg.Connection[Any],
    spec: dict[str, Any],
    *,
    started_at: datetime = SEED_STARTED_AT,
    create_job: bool = True,
) -> RecordedRun:
    """Record *spec* the runner's legacy way: jobs, one run and one region_results row per
    region holding one answer (``{"data": ..., "hash": ""}``), no executions rows.

    Before 2025-10-13 a region ran one prompt (the first model and question), so each region
    carries that pair's answer (runner-app.md sections 2.5, 5).
    """
    job_id = None
    if create_job:
        row = conn.execute(
            "INSERT INTO jobs (jobspec_id, jobspec_data, status, created_at, updated_at) "
            "VALUES (%s, %s, 'queued', %s, %s) RETURNING id",
            (
                spec["id"],
                Jsonb(spec),
                started_at.replace(tzinfo=None),
                started_at.replace(tzinfo=None),
            ),
        ).fetchone()
        job_id = int(row[0]) if row else None
    regions = spec["constraints"]["regions"]
    run_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO cross_region_executions (id, jobspec_id, total_regions, min_regions_required,"
        " status, started_at, success_count, completed_at) "
        "VALUES (%s, %s, %s, %s, 'completed', %s, %s, %s)",
        (
            run_id,
            spec["id"],
            len(regions),
            max(1, int(len(regions) * 0.67)),
            started_at,
            len(regions),
            started_at + timedelta(minutes=len(regions)),
        ),
    )
    model_id, question_id = spec["metadata"]["models"][0], spec["questions"][0]
    ids: dict[str, uuid.UUID] = {}
    for k, region in enumerate(regions):
        region_start = started_at + timedelta(minutes=k)
        ids[region] = uuid.uuid4()
        conn.execute(
            "INSERT INTO region_results (id, cross_region_execution_id, region, provider_id,"
            " status, started_at, completed_at, duration_ms, execution_output, error_message,"
            " metadata) VALUES (%s, %s, %s, %s, 'success', %s, %s, 45000, %s, '', %s)",
            (
                ids[region],
                run_id,
                region,
                PROVIDERS.get(region),
                region_start,
                region_start + timedelta(seconds=45),
                Jsonb({"data": answer(model_id, question_id, region), "hash": ""}),
                Jsonb(
                    {
                        "success_count": 1,
                        "failure_count": 0,
                        "total_executions": 1,
                        "plan_priority": k,
                    }
                ),
            ),
        )
    return RecordedRun(job_id=job_id, run_id=run_id, region_result_ids=ids)
