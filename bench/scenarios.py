"""The benchmarks: each measures beaconsql against what a user would otherwise do, in the same
run, interleaved (A B A B …) and summarised by medians. Names of ratios are the contract of
docs/performance.md."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from beaconsql import backfill, seed, writer
from bench.harness import (
    Results,
    median,
    p95,
    portal_query,
    queries,
    scratch_database,
    set_mirror_triggers,
    timer,
)

ROUNDS = 5
RUNS_PER_ROUND = 50
MODELS = seed.MODELS
QUESTIONS = seed.QUESTIONS
REGIONS = seed.REGIONS


# -- 1, 2: the write path ---------------------------------------------------------------------


# The executions rows the SPEC requires of any mirror of a writer run ("Every expected pair":
# a pending row per expected pair from the region's start; "Per-pair results": the pair's row
# once its element is recorded), written by hand: the floor of the write path.
_FLOOR_PENDING_ROWS = """
INSERT INTO executions (job_id, cross_region_execution_id, region, provider_id, model_id,
                        question_id, status, started_at, created_at, mirror_region_result_id,
                        mirror_evidence)
SELECT (SELECT id FROM jobs WHERE jobspec_id = %(jobspec_id)s), %(run_id)s, %(region)s,
       %(provider_id)s, m, q, 'running', %(started_at)s, %(started_at)s, %(region_result_id)s, 1
FROM unnest(%(models)s::text[]) m, unnest(%(questions)s::text[]) q
"""
_FLOOR_PAIR_ROW = """
UPDATE executions
SET status = 'completed', started_at = %(started_at)s, completed_at = %(completed_at)s,
    created_at = %(started_at)s, output_data = %(output)s, receipt_data = %(receipt)s,
    mirror_evidence = 3
WHERE mirror_region_result_id = %(region_result_id)s
  AND model_id = %(model_id)s AND question_id = %(question_id)s
"""


def _record_with_writer(
    conn: psycopg.Connection[Any], jobspec_id: str, t0: datetime, *, by_hand: bool = False
) -> None:
    """One run the beaconsql way: the writer, every statement its own transaction.

    by_hand (run with the triggers off): each start_region and record_pair also writes, in its
    own transaction, exactly the executions rows the SPEC requires, with none of the mirror's
    work (the rule, the diff, the locks, the state): the floor of any mirror of this SPEC."""
    spec = seed.jobspec(jobspec_id)
    naive = t0.astimezone(UTC).replace(tzinfo=None)
    writer.create_job(conn, spec, created_at=t0)
    run_id = writer.start_run(conn, jobspec_id, regions=list(REGIONS), started_at=t0)
    together = conn.transaction if by_hand else nullcontext
    n = 0
    for region in REGIONS:
        with together():
            rid = writer.start_region(
                conn, run_id, region, provider_id=seed.PROVIDERS[region], started_at=t0
            )
            if by_hand:
                conn.execute(
                    _FLOOR_PENDING_ROWS,
                    {
                        "jobspec_id": jobspec_id,
                        "run_id": run_id,
                        "region": region,
                        "provider_id": seed.PROVIDERS[region],
                        "started_at": naive,
                        "region_result_id": rid,
                        "models": list(MODELS),
                        "questions": list(QUESTIONS),
                    },
                )
        for model_id in MODELS:
            for question_id in QUESTIONS:
                n += 1
                output = seed.answer(model_id, question_id, region)
                receipt = seed.receipt(jobspec_id, model_id, question_id, region, n)
                with together():
                    writer.record_pair(
                        conn,
                        rid,
                        model_id=model_id,
                        question_id=question_id,
                        status="completed",
                        started_at=t0,
                        completed_at=t0 + timedelta(seconds=n),
                        output=output,
                        receipt=receipt,
                    )
                    if by_hand:
                        conn.execute(
                            _FLOOR_PAIR_ROW,
                            {
                                "started_at": naive,
                                "completed_at": naive + timedelta(seconds=n),
                                "output": Jsonb(output),
                                "receipt": Jsonb(receipt),
                                "region_result_id": rid,
                                "model_id": model_id,
                                "question_id": question_id,
                            },
                        )
        writer.finish_region(conn, rid, completed_at=t0 + timedelta(seconds=n + 1))
    writer.finish_run(conn, run_id, completed_at=t0 + timedelta(seconds=n + 2))


def _record_dual_write(conn: psycopg.Connection[Any], jobspec_id: str, t0: datetime) -> None:
    """One run the seed's way (runner-app.md section 2): region rows, and one executions INSERT
    per pair, every statement its own transaction."""
    spec = seed.jobspec(jobspec_id)
    naive = t0.astimezone(UTC).replace(tzinfo=None)
    conn.execute(
        "INSERT INTO jobs (jobspec_id, jobspec_data, status, created_at, updated_at) "
        "VALUES (%s, %s, 'queued', %s, now())",
        (jobspec_id, Jsonb(spec), naive),
    )
    run_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO cross_region_executions (id, jobspec_id, total_regions, min_regions_required,"
        " min_success_rate, status, started_at) VALUES (%s, %s, 2, 1, 0.67, 'running', %s)",
        (run_id, jobspec_id, t0),
    )
    n = 0
    for region in REGIONS:
        rid = uuid.uuid4()
        conn.execute(
            "INSERT INTO region_results (id, cross_region_execution_id, region, status, started_at)"
            " VALUES (%s, %s, %s, 'running', %s)",
            (rid, run_id, region, t0),
        )
        first = None
        for model_id in MODELS:
            for question_id in QUESTIONS:
                n += 1
                output = seed.answer(model_id, question_id, region)
                first = first or output
                conn.execute(
                    "INSERT INTO executions (job_id, provider_id, region, status, started_at,"
                    " completed_at, output_data, receipt_data, model_id, question_id, created_at)"
                    " VALUES ((SELECT id FROM jobs WHERE jobspec_id = %s), %s, %s, 'completed',"
                    " %s, %s, %s, %s, %s, %s, %s)",
                    (
                        jobspec_id,
                        seed.PROVIDERS[region],
                        region,
                        naive,
                        naive + timedelta(seconds=n),
                        Jsonb(output),
                        Jsonb(seed.receipt(jobspec_id, model_id, question_id, region, n)),
                        model_id,
                        question_id,
                        naive,
                    ),
                )
        conn.execute(
            "UPDATE region_results SET status = 'success', completed_at = %s, duration_ms = %s,"
            " provider_id = %s, execution_output = %s, error_message = '', metadata = %s"
            " WHERE id = %s",
            (
                t0 + timedelta(seconds=n + 1),
                (n + 1) * 1000,
                seed.PROVIDERS[region],
                Jsonb({"data": first, "hash": ""}),
                Jsonb(
                    {
                        "success_count": 9,
                        "failure_count": 0,
                        "total_executions": 9,
                        "plan_priority": 0,
                    }
                ),
                rid,
            ),
        )
    conn.execute(
        "UPDATE cross_region_executions SET status = 'completed', success_count = 2,"
        " failure_count = 0, completed_at = %s, duration_ms = %s WHERE id = %s",
        (t0 + timedelta(seconds=n + 2), (n + 2) * 1000, run_id),
    )
    conn.execute(
        "UPDATE jobs SET status = 'completed', updated_at = now() WHERE jobspec_id = %s",
        (jobspec_id,),
    )


# The sides of the write scenario: (triggers on, how one run is recorded).
_WRITE_SIDES = {
    "beaconsql": (True, _record_with_writer),
    "dual_write": (False, _record_dual_write),
    "floor": (False, partial(_record_with_writer, by_hand=True)),
    "writer_alone": (False, _record_with_writer),
}


def record_run(server: str, results: Results) -> None:
    """record_run_vs_dual_write and trigger_overhead_append, and two report-only ratios that
    split the first: the writer alone (triggers off) and the floor (the writer plus, by hand,
    the executions rows the SPEC requires), each over the dual write."""
    dsn = scratch_database(server, "beaconsql_bench_write")
    t0 = datetime(2025, 10, 12, 17, 0, tzinfo=UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Warm up every path (plans cached, pages in memory) before measuring.
        for side, (triggers, record) in _WRITE_SIDES.items():
            set_mirror_triggers(conn, triggers)
            record(conn, f"warm-{side}", t0)
        times: dict[str, list[float]] = {side: [] for side in _WRITE_SIDES}
        for r in range(ROUNDS):
            for side, (triggers, record) in _WRITE_SIDES.items():
                set_mirror_triggers(conn, triggers)
                conn.execute("CHECKPOINT")
                with timer() as elapsed:
                    for i in range(RUNS_PER_ROUND):
                        record(conn, f"{side}-{r}-{i}", t0)
                times[side].append(elapsed())
        set_mirror_triggers(conn, True)
        per_run = {side: median(times[side]) / RUNS_PER_ROUND for side in _WRITE_SIDES}
        for side, seconds in per_run.items():
            results.figure(f"record_run_{side}_ms", 1000 * seconds, "ms per run")
        dual = per_run["dual_write"]
        results.ratio("record_run_vs_dual_write", per_run["beaconsql"] / dual, "<= 2.0, aim <= 1.6")
        results.ratio("record_run_floor_vs_dual_write", per_run["floor"] / dual, "report only")
        results.ratio(
            "record_run_writer_alone_vs_dual_write", per_run["writer_alone"] / dual, "report only"
        )

        appends: dict[bool, list[float]] = {True: [], False: []}
        spec = seed.jobspec("append-probe")
        writer.create_job(conn, spec)
        run_id = writer.start_run(conn, spec["id"], regions=["US"])
        for _ in range(ROUNDS):
            for triggers in (True, False):
                set_mirror_triggers(conn, triggers)
                samples = []
                for _ in range(20):
                    rid = writer.start_region(conn, run_id, "US")
                    for model_id in MODELS:
                        for question_id in QUESTIONS:
                            with timer() as elapsed:
                                writer.record_pair(
                                    conn,
                                    rid,
                                    model_id=model_id,
                                    question_id=question_id,
                                    status="completed",
                                    output=seed.answer(model_id, question_id, "US"),
                                )
                            samples.append(elapsed())
                appends[triggers].append(median(samples))
        set_mirror_triggers(conn, True)
        on, off = median(appends[True]), median(appends[False])
        results.figure("append_with_trigger_ms", 1000 * on, "ms per record_pair")
        results.figure("append_without_trigger_ms", 1000 * off, "ms per record_pair")
        results.ratio("trigger_overhead_append", on / off, "report only")


# -- 3, 5, 6: the backfill ----------------------------------------------------------------------


def _legacy_history(dsn: str, jobs: int, prefix: str = "legacy-") -> None:
    """Jobs recorded the runner's legacy way with beaconsql's triggers skipped: history."""
    q = queries()
    with psycopg.connect(dsn, autocommit=True) as conn:
        set_mirror_triggers(conn, False)
        conn.execute(q["jobs"], {"prefix": prefix, "n": jobs})
        conn.execute(q["runs"], {"prefix": prefix})
        conn.execute(q["legacy_region_results"], {"prefix": prefix})
        set_mirror_triggers(conn, True)
        conn.execute("VACUUM ANALYZE")


def _reset_mirror(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "TRUNCATE executions, transparency_log, region_results_mirror_state,"
        " region_results_mirror_anomalies, region_results_backfill_runs"
    )
    conn.execute("VACUUM ANALYZE executions")
    conn.execute("CHECKPOINT")


def backfill_ceiling(server: str, results: Results) -> None:
    """backfill_vs_insert_select: 20k legacy region results (180k rows)."""
    dsn = scratch_database(server, "beaconsql_bench_backfill")
    _legacy_history(dsn, 10_000)
    rates: dict[str, list[float]] = {"backfill": [], "insert_select": []}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(3):
            _reset_mirror(conn)
            with timer() as elapsed:
                summary = backfill.backfill(conn)
            rates["backfill"].append(summary.inserted / elapsed())
            _reset_mirror(conn)
            set_mirror_triggers(conn, False)
            with timer() as elapsed:
                inserted = conn.execute(queries()["insert_select_rule"]).rowcount
            set_mirror_triggers(conn, True)
            rates["insert_select"].append(inserted / elapsed())
    a, b = median(rates["backfill"]), median(rates["insert_select"])
    results.figure("backfill_rows_per_s", a, "rows/s", rows=summary.inserted)
    results.figure("insert_select_rows_per_s", b, "rows/s", rows=inserted)
    results.ratio("backfill_vs_insert_select", a / b, ">= 0.7, aim >= 0.9")


_RSS_PROBE = """
import json, resource, sys, time, psycopg
from beaconsql import backfill
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    t = time.perf_counter()
    s = backfill.backfill(conn)
    print(json.dumps({"seconds": time.perf_counter() - t, "inserted": s.inserted,
                      "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def backfill_scaling(server: str, results: Results) -> None:
    """backfill_rss_25k_vs_5k and backfill_time_25k_vs_5k: the backfill in its own process."""
    measured = {}
    for size in (5_000, 25_000):
        dsn = scratch_database(server, f"beaconsql_bench_scale_{size}")
        _legacy_history(dsn, size // 2)
        out = subprocess.run(
            [sys.executable, "-c", _RSS_PROBE, dsn], check=True, capture_output=True, text=True
        ).stdout
        measured[size] = json.loads(out.strip().splitlines()[-1])
    small, large = measured[5_000], measured[25_000]
    results.figure("backfill_rss_5k_kib", small["max_rss_kib"], "KiB peak RSS")
    results.figure("backfill_rss_25k_kib", large["max_rss_kib"], "KiB peak RSS")
    results.figure("backfill_5k_seconds", small["seconds"], "s")
    results.figure("backfill_25k_seconds", large["seconds"], "s")
    results.ratio("backfill_rss_25k_vs_5k", large["max_rss_kib"] / small["max_rss_kib"], "<= 1.3")
    results.ratio(
        "backfill_time_25k_vs_5k", large["seconds"] / small["seconds"], "report (linear is 5)"
    )


# -- 4: the portal read -------------------------------------------------------------------------


def portal_read(server: str, results: Results, *, jobs: int = 50_000) -> None:
    """portal_view_vs_direct: half the jobs through the writer's format, half the runner's way
    (direct rows plus region rows), all mirrored; 200 random jobs x 3 rounds."""
    dsn = scratch_database(server, "beaconsql_bench_portal")
    q = queries()
    half = jobs // 2
    with psycopg.connect(dsn, autocommit=True) as conn:
        set_mirror_triggers(conn, False)
        for prefix, regions_query in (
            ("writer-", "writer_region_results"),
            ("runner-", "legacy_region_results"),
        ):
            conn.execute(q["jobs"], {"prefix": prefix, "n": half})
            conn.execute(q["runs"], {"prefix": prefix})
            conn.execute(q[regions_query], {"prefix": prefix})
        conn.execute(q["direct_executions"], {"prefix": "runner-"})
        set_mirror_triggers(conn, True)
        conn.execute("VACUUM ANALYZE")
        summary = backfill.backfill(conn, batch_size=2000)
        conn.execute("VACUUM ANALYZE")
        total = conn.execute("SELECT count(*) FROM executions").fetchone()
        results.figure(
            "portal_dataset",
            jobs,
            "jobs",
            executions_rows=total[0] if total else 0,
            mirrored_rows=summary.inserted,
        )
        ids = [f"{p}{random.randint(1, half)}" for p in ("writer-", "runner-") for _ in range(100)]
        view, direct = portal_query(), q["direct_read"]
        params = [{"jobspec_id": i, "limit": None, "offset": 0} for i in ids]
        lat: dict[str, list[float]] = {k: [] for k in ("view", "direct", "view_u", "direct_u")}
        for _ in range(3):
            for p in params:
                for key, sql, prepare in (
                    ("view", view, True),
                    ("direct", direct, True),
                    ("view_u", view, False),
                    ("direct_u", direct, False),
                ):
                    with timer() as elapsed:
                        conn.execute(sql, p, prepare=prepare).fetchall()
                    lat[key].append(elapsed())
        for key, sql in (("view", view), ("direct", direct)):
            plan = conn.execute(
                f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", params[0]
            ).fetchall()
            results.plans[f"portal_{key}"] = "\n".join(r[0] for r in plan)
    for key in lat:
        results.figure(
            f"portal_{key}_ms", 1000 * median(lat[key]), "ms", p95=round(1000 * p95(lat[key]), 4)
        )
    results.ratio(
        "portal_view_vs_direct", median(lat["view"]) / median(lat["direct"]), "<= 2.0, aim <= 1.3"
    )
    results.figure(
        "portal_view_vs_direct_unprepared", median(lat["view_u"]) / median(lat["direct_u"]), "ratio"
    )
    results.figure("portal_view_vs_direct_p95", p95(lat["view"]) / p95(lat["direct"]), "ratio")
