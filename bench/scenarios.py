"""The benchmarks: each measures beaconsql against what a user would otherwise do, in the same
run, interleaved (A B A B …) and summarised by medians. Names of ratios are the contract of
docs/performance.md."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from beaconsql import backfill, portal, seed, writer
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


# The executions row the SPEC stores for a recorded pair ("Stored or derived": one insert per
# pair, nothing at the region's start), written by hand: with the writer alone, the floor of the
# write path. (The benchmark's regions end with every pair recorded: no evidence-1 row.)
_FLOOR_PAIR_ROW = """
INSERT INTO executions (job_id, cross_region_execution_id, region, provider_id, model_id,
                        question_id, status, started_at, completed_at, created_at, output_data,
                        receipt_data, mirror_region_result_id, mirror_evidence)
VALUES ((SELECT id FROM jobs WHERE jobspec_id = %(jobspec_id)s), %(run_id)s, %(region)s,
        %(provider_id)s, %(model_id)s, %(question_id)s, 'completed', %(started_at)s,
        %(completed_at)s, %(started_at)s, %(output)s, %(receipt)s, %(region_result_id)s, 3)
"""


def _record_with_writer(
    conn: psycopg.Connection[Any], jobspec_id: str, t0: datetime, *, by_hand: bool = False
) -> None:
    """One run the beaconsql way: the writer, every statement its own transaction.

    by_hand (run with the triggers off): each record_pair also writes, in its own transaction,
    exactly the executions row the SPEC stores, with none of the mirror's work (the rule, the
    diff, the locks, the state): the floor of any mirror of this SPEC."""
    spec = seed.jobspec(jobspec_id)
    naive = t0.astimezone(UTC).replace(tzinfo=None)
    writer.create_job(conn, spec, created_at=t0)
    run_id = writer.start_run(conn, jobspec_id, regions=list(REGIONS), started_at=t0)
    together = conn.transaction if by_hand else nullcontext
    n = 0
    for region in REGIONS:
        rid = writer.start_region(
            conn, run_id, region, provider_id=seed.PROVIDERS[region], started_at=t0
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
                                "jobspec_id": jobspec_id,
                                "run_id": run_id,
                                "region": region,
                                "provider_id": seed.PROVIDERS[region],
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
    """record_run_vs_dual_write, record_run_vs_floor (the mirror's own work) and
    trigger_overhead_append, and two report-only ratios that split the first: the writer alone
    (triggers off) and the floor (the writer plus, by hand, the executions rows the SPEC
    stores), each over the dual write."""
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
        results.ratio("record_run_vs_dual_write", per_run["beaconsql"] / dual, "<= 2.0")
        results.ratio("record_run_vs_floor", per_run["beaconsql"] / per_run["floor"], "<= 1.1")
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


RUNNING_JOBS = 300
UNMIRRORED_REGION_RESULTS = 300


def build_portal_dataset(conn: psycopg.Connection[Any], jobs: int) -> dict[str, int]:
    """Fill a migrated database as the portal finds it in production: *jobs* finished jobs,
    half recorded through the writer's format, half the runner's way (direct rows plus its
    region rows), all mirrored; then RUNNING_JOBS jobs whose regions are still running, and
    UNMIRRORED_REGION_RESULTS region results changed while the mirror's triggers were off.
    Return the dataset's sizes."""
    q = queries()
    half = jobs // 2
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
    # The running jobs, through the triggers as the writer records them.
    conn.execute(q["jobs"], {"prefix": "running-", "n": RUNNING_JOBS})
    conn.execute(q["runs"], {"prefix": "running-"})
    conn.execute(
        "UPDATE cross_region_executions SET status = 'running', completed_at = NULL "
        "WHERE jobspec_id LIKE 'running-%'"
    )
    conn.execute("UPDATE jobs SET status = 'running' WHERE jobspec_id LIKE 'running-%'")
    conn.execute(q["running_region_results"], {"prefix": "running-", "recorded": 4})
    set_mirror_triggers(conn, False)
    conn.execute(
        q["unmirror_region_results"], {"prefix": "writer-", "n": UNMIRRORED_REGION_RESULTS}
    )
    set_mirror_triggers(conn, True)
    conn.execute("VACUUM ANALYZE")
    row = conn.execute("SELECT count(*) FROM executions").fetchone()
    return {
        "jobs": jobs + RUNNING_JOBS,
        "executions_rows": row[0] if row else 0,
        "mirrored_rows": summary.inserted,
        "running_jobs": RUNNING_JOBS,
        "unmirrored_region_results": UNMIRRORED_REGION_RESULTS,
    }


# The portal's reads scoped to a job or an execution, each against the runner's own query of
# executions: (ratio name, the portal's read, the runner's, parameters of one sample).
_SCOPED_READS: tuple[
    tuple[str, str, str, Callable[[random.Random, list[int]], dict[str, Any]]], ...
] = (
    (
        "portal_view_vs_direct",
        "executions",
        "direct_read",
        lambda rng, ids: _job_read(rng),
    ),
    (
        "portal_job_page_vs_direct",
        "executions",
        "direct_job_page",
        lambda rng, ids: {"jobspec_id": _job(rng), "limit": 100, "offset": 0},
    ),
    (
        "portal_cross_region_vs_direct",
        "cross_region",
        "direct_cross_region",
        lambda rng, ids: {"jobspec_id": _job(rng), "model_id": rng.choice(MODELS)},
    ),
    (
        "portal_cross_region_diff_vs_direct",
        "cross_region_diff",
        "direct_cross_region_diff",
        lambda rng, ids: {"jobspec_id": _job(rng)},
    ),
    (
        "portal_execution_vs_direct",
        "execution",
        "direct_execution",
        lambda rng, ids: {"execution_id": rng.choice(ids)},
    ),
)
_PORTAL_JOBS = 50_000


def _job(rng: random.Random) -> str:
    return f"{rng.choice(('writer-', 'runner-'))}{rng.randint(1, _PORTAL_JOBS // 2)}"


def _job_read(rng: random.Random) -> dict[str, Any]:
    return {"jobspec_id": _job(rng), "limit": None, "offset": 0}


def _planning_ms(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> float:
    """Median planning time of *sql* (EXPLAIN's summary), as an unprepared read pays it."""
    times = []
    for _ in range(20):
        plan = conn.execute(f"EXPLAIN (SUMMARY, COSTS OFF) {sql}", params, prepare=False)
        line = next(r[0] for r in plan.fetchall() if r[0].startswith("Planning Time"))
        times.append(float(line.split()[2]))
    return median(times)


def portal_read(server: str, results: Results, *, jobs: int = _PORTAL_JOBS) -> None:
    """portal_<read>_vs_direct: each portal read against the runner's own query of executions,
    on build_portal_dataset's database. Reads scoped to a job or an execution: 200 samples x 3
    rounds, prepared and unprepared, interleaved; the whole-view reads (the list, its count,
    the diffs): 3 rounds, with the share spent on the rows the view derives shown apart."""
    dsn = scratch_database(server, "beaconsql_bench_portal")
    q = queries()
    rng = random.Random(7)
    with psycopg.connect(dsn, autocommit=True) as conn:
        results.figure("portal_dataset", jobs, "jobs", **build_portal_dataset(conn, jobs))
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM executions TABLESAMPLE SYSTEM (1) LIMIT 500"
            ).fetchall()
        ]
        for name, read, direct, sample in _SCOPED_READS:
            view_sql, direct_sql = portal_query(read), q[direct]
            lat: dict[str, list[float]] = {k: [] for k in ("view", "direct", "view_u", "direct_u")}
            samples = [sample(rng, ids) for _ in range(200)]
            for _ in range(3):
                for params in samples:
                    for key, sql, prepare in (
                        ("view", view_sql, True),
                        ("direct", direct_sql, True),
                        ("view_u", view_sql, False),
                        ("direct_u", direct_sql, False),
                    ):
                        with timer() as elapsed:
                            conn.execute(sql, params, prepare=prepare).fetchall()
                        lat[key].append(elapsed())
            target = "<= 1.5, aim <= 1.3" if name == "portal_view_vs_direct" else "<= 1.5"
            results.ratio(name, median(lat["view"]) / median(lat["direct"]), target)
            results.figure(
                f"{name}_unprepared",
                median(lat["view_u"]) / median(lat["direct_u"]),
                "ratio",
                view_ms=round(1000 * median(lat["view"]), 3),
                direct_ms=round(1000 * median(lat["direct"]), 3),
                view_unprepared_ms=round(1000 * median(lat["view_u"]), 3),
                direct_unprepared_ms=round(1000 * median(lat["direct_u"]), 3),
                view_p95_ms=round(1000 * p95(lat["view"]), 3),
            )
            plan = conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {view_sql}", samples[0])
            results.plans[name] = "\n".join(r[0] for r in plan.fetchall())
        job_read = {"jobspec_id": "writer-1", "limit": None, "offset": 0}
        results.figure(
            "portal_job_read_planning_ms",
            _planning_ms(conn, portal_query(), job_read),
            "ms",
            target="<= 1",
            direct_ms=_planning_ms(conn, q["direct_read"], job_read),
            view_ms=_planning_ms(conn, q["view_read"], job_read),
        )
        # what the function plans once per connection, and what that costs a connection
        plan = conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {q['view_read']}", job_read)
        results.plans["executions_unified_of_job"] = "\n".join(r[0] for r in plan.fetchall())
        # the first two reads of a new connection (each new server process loads its catalog
        # caches on its first statements, whatever it reads): the portal's and the runner's
        first: dict[str, list[float]] = {k: [] for k in ("view", "view_then", "direct")}
        for params in [_job_read(rng) for _ in range(20)]:
            for key, sql in (("view", portal_query()), ("direct", q["direct_read"])):
                with psycopg.connect(dsn, autocommit=True) as fresh:
                    with timer() as elapsed:
                        fresh.execute(sql, params, prepare=False).fetchall()
                    first[key].append(elapsed())
                    if key == "view":
                        with timer() as elapsed:
                            fresh.execute(sql, params, prepare=False).fetchall()
                        first["view_then"].append(elapsed())
        results.figure(
            "portal_job_read_first_on_a_connection_ms",
            1000 * median(first["view"]),
            "ms",
            then_ms=round(1000 * median(first["view_then"]), 3),
            direct_ms=round(1000 * median(first["direct"]), 3),
            share="the first read of a connection plans the view once (the function keeps it)",
        )
        _whole_view_reads(conn, results)


def _direct_list(conn: psycopg.Connection[Any], limit: int, offset: int) -> object:
    """The runner's list: a page and its total."""
    q = queries()
    page = conn.execute(q["direct_list"], {"limit": limit, "offset": offset}).fetchall()
    return page, conn.execute(q["direct_count"]).fetchone()


def _whole_view_reads(conn: psycopg.Connection[Any], results: Results) -> None:
    """The list (its first page of 20, and 200 at offset 1000, each with its total) and the
    diffs, through beaconsql.portal against the runner's queries; 3 rounds each."""
    q = queries()
    sides: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "portal_list_vs_direct": (
            lambda: portal.executions_list(conn, limit=20),
            lambda: _direct_list(conn, 20, 0),
        ),
        "portal_list_offset_vs_direct": (
            lambda: portal.executions_list(conn, limit=200, offset=1000),
            lambda: _direct_list(conn, 200, 1000),
        ),
        "portal_diffs_vs_direct": (
            lambda: portal.diffs(conn, limit=20),
            lambda: conn.execute(q["direct_diffs"], {"limit": 20}).fetchall(),
        ),
    }
    for name, (view, direct) in sides.items():
        lat: dict[str, list[float]] = {"view": [], "direct": []}
        for _ in range(3):
            for key, fn in (("view", view), ("direct", direct)):
                with timer() as elapsed:
                    fn()
                lat[key].append(elapsed())
        results.ratio(name, median(lat["view"]) / median(lat["direct"]), "report")
        results.figure(
            f"{name}_ms",
            1000 * median(lat["view"]),
            "ms",
            direct_ms=round(1000 * median(lat["direct"]), 3),
        )
    derived = []
    count = []
    for _ in range(3):
        with timer() as elapsed, portal.whole_view_reads(conn):
            conn.execute(q["view_derived_rows"]).fetchall()
        derived.append(elapsed())
        with timer() as elapsed, portal.whole_view_reads(conn):
            conn.execute(portal_query("executions_count")).fetchall()
        count.append(elapsed())
    results.figure(
        "portal_derived_rows_ms",
        1000 * median(derived),
        "ms",
        share="finding the region results not mirrored and deriving their rows",
    )
    results.figure("portal_count_ms", 1000 * median(count), "ms")


# -- 7: beaconsql serve under load --------------------------------------------------------------

SERVE_CLIENTS = 50
SERVE_WRITERS = 4
SERVE_SECONDS = 15.0
SERVE_ROUNDS = 2

# The clients, in a process of their own (the server and the writers run in others): N
# pollers of the page's data request, each at 1 request/s, evenly spread over the second; or
# N event-stream readers. Prints the latencies (s), the errors and the events received.
_CLIENTS = """
import asyncio, json, sys, time
import httpx
base, mode = sys.argv[1], sys.argv[2]
seconds, n, jobs = float(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split(",")
latencies, errors, events = [], [], [0]

async def poll(client, i, t0):
    k = 0
    while True:
        at = t0 + i / n + k
        if at > t0 + seconds:
            return
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        started = time.monotonic()
        r = await client.get(f"{base}/jobs/{jobs[i % len(jobs)]}/progress")
        latencies.append(time.monotonic() - started)
        if r.status_code != 200:
            errors.append(r.status_code)
        k += 1

async def stream(client, i, t0):
    try:
        async with asyncio.timeout(seconds - (time.monotonic() - t0)):
            async with client.stream("GET", f"{base}/jobs/{jobs[i % len(jobs)]}/events") as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        events[0] += 1
    except TimeoutError:
        pass

async def main():
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        t0 = time.monotonic()
        run = poll if mode == "poll" else stream
        await asyncio.gather(*(run(client, i, t0) for i in range(n)))

asyncio.run(main())
print(json.dumps({"latencies": latencies, "errors": errors, "events": events[0]}))
"""


def _running_jobs(conn: psycopg.Connection[Any], prefix: str, n: int) -> list[str]:
    """Jobs that are running: a run, region US started, 4 of its 9 pairs recorded."""
    ids = []
    for i in range(n):
        spec = seed.jobspec(f"{prefix}{i}")
        writer.create_job(conn, spec)
        run_id = writer.start_run(conn, spec["id"], regions=list(REGIONS))
        rid = writer.start_region(conn, run_id, "US", provider_id=seed.PROVIDERS["US"])
        for model_id, question_id in list((m, q) for m in MODELS for q in QUESTIONS)[:4]:
            writer.record_pair(
                conn, rid, model_id=model_id, question_id=question_id, status="completed"
            )
        ids.append(spec["id"])
    return ids


def _start_serve(dsn: str, share: float) -> tuple[subprocess.Popen[bytes], str]:
    """`beaconsql serve` in its own process on a free port; return it and its base URL."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beaconsql.cli",
            "serve",
            "--dsn",
            dsn,
            "--port",
            str(port),
            "--share",
            str(share),
            "--pool-max",
            "10",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                if response.status == 200:
                    return process, base
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("beaconsql serve did not start")
        time.sleep(0.1)


def _clients(base: str, mode: str, seconds: float, jobs: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CLIENTS,
            base,
            mode,
            str(seconds),
            str(SERVE_CLIENTS),
            ",".join(jobs),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def _write_for(dsn: str, seconds: float, tag: str) -> float:
    """SERVE_WRITERS connections record whole runs through the writer for *seconds*; return
    runs per second."""
    import threading
    import time

    t0 = datetime(2025, 10, 12, 17, 0, tzinfo=UTC)
    done = [0] * SERVE_WRITERS
    stop = time.monotonic() + seconds

    def work(w: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            k = 0
            while time.monotonic() < stop:
                _record_with_writer(conn, f"w-{tag}-{w}-{k}", t0)
                k += 1
            done[w] = k

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(w,)) for w in range(SERVE_WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - started)


def _commits(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database "
        "WHERE datname = current_database()"
    ).fetchone()
    return int(row[0]) if row else 0


def serve_load(server: str, results: Results) -> None:
    """serve_writer_slowdown: 4 writers recording runs, alone and while 50 clients poll the
    live page's data request at 1 request/s each (all on one running job, then one job each);
    the clients' latency; and what polling and the event stream cost the database."""
    import time

    dsn = scratch_database(server, "beaconsql_bench_serve")
    with psycopg.connect(dsn, autocommit=True) as conn:
        jobs = _running_jobs(conn, "poll-", SERVE_CLIENTS)
        _record_with_writer(conn, "warm-serve", datetime(2025, 10, 12, 17, 0, tzinfo=UTC))
        conn.execute("VACUUM ANALYZE")
    cases = {"alone": None, "one_job": jobs[:1], "many_jobs": jobs}
    rates: dict[str, list[float]] = {case: [] for case in cases}
    latencies: dict[str, list[float]] = {case: [] for case in cases if cases[case]}
    process, base = _start_serve(dsn, share=1.0)
    try:
        for r in range(SERVE_ROUNDS):
            for case, polled in cases.items():
                clients = None
                if polled:
                    clients = _clients(base, "poll", SERVE_SECONDS + 3, polled)
                    time.sleep(2)  # the clients' connections up and polling
                rates[case].append(_write_for(dsn, SERVE_SECONDS, f"{case}-{r}"))
                if clients is not None:
                    out = json.loads(clients.communicate(timeout=120)[0])
                    if out["errors"]:
                        raise RuntimeError(
                            f"{case}: {len(out['errors'])} errors {out['errors'][:5]}"
                        )
                    latencies[case] += out["latencies"]
    finally:
        process.terminate()
        process.wait(timeout=30)
    alone = median(rates["alone"])
    results.figure("serve_writers_alone_runs_per_s", alone, "runs/s", writers=SERVE_WRITERS)
    slowdowns = []
    for case in ("one_job", "many_jobs"):
        rate = median(rates[case])
        results.figure(f"serve_writers_{case}_runs_per_s", rate, "runs/s", writers=SERVE_WRITERS)
        lat = latencies[case]
        results.figure(
            f"serve_poll_{case}_ms",
            1000 * median(lat),
            "ms",
            p95=round(1000 * p95(lat), 2),
            requests=len(lat),
            clients=SERVE_CLIENTS,
        )
        slowdowns.append(alone / rate)
        results.figure(f"serve_writer_slowdown_{case}", alone / rate, "ratio")
    results.ratio("serve_writer_slowdown", max(slowdowns), "<= 1.2")

    # What keeping 50 pages live costs the database: transactions per second, polling at
    # 1 request/s against the event stream (server side, one read per interval), with and
    # without answers shared for 1 s. No writers meanwhile.
    seconds = 8.0
    cost: dict[str, float] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for share in (1.0, 0.0):
            process, base = _start_serve(dsn, share=share)
            try:
                for mode in ("poll", "events"):
                    time.sleep(1.5)  # the last phase's statistics flushed
                    before = _commits(conn)
                    clients = _clients(base, mode, seconds, jobs[:1])
                    out = json.loads(clients.communicate(timeout=120)[0])
                    time.sleep(1.5)
                    key = f"{mode}_{'shared' if share else 'unshared'}"
                    cost[key] = (_commits(conn) - before - 2) / seconds
                    results.figure(
                        f"serve_db_{key}_xacts_per_s",
                        cost[key],
                        "transactions/s",
                        clients=SERVE_CLIENTS,
                        events=out["events"],
                        requests=len(out["latencies"]),
                    )
            finally:
                process.terminate()
                process.wait(timeout=30)
    results.ratio(
        "serve_events_vs_poll_db_cost",
        cost["events_unshared"] / cost["poll_unshared"],
        "report only",
    )
