"""The runner's statement mix on the same jobs, many connections at once (`make stress`; a
small run is a test in test_concurrency.py).

Each worker is an autocommit connection with ``lock_timeout`` 0, as the runner's are, running
the runner's own statements chosen at random, on a few jobs shared by every worker: the
writer recording regions (per-region writers in parallel, stricter than the runner, whose
regions run one after another), the dual write's direct rows, the cancel, the retry service,
run deletes, spec updates, direct-row deletes. Beside them a backfill and a verify loop. Every
statement's outcome is counted by SQLSTATE; one that runs past HANG_SECONDS is a hang.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from helpers import RUNNER_CANCEL
from psycopg.types.json import Jsonb

from beaconsql import backfill, seed, verify, writer
from beaconsql.errors import InvalidArgumentError

MODELS = ["m1", "m2", "m3"]
QUESTIONS = ["q1", "q2"]
REGIONS = ["US", "EU", "ASIA"]
HANG_SECONDS = 30
# What the mirror could cause (SPEC "No runner statement aborted by the mirror"): a deadlock, a
# lock or statement timeout, a serialisation failure. Other errors are the runner's own races
# (a region started in a run another statement just deleted), counted apart.
MIRROR_ABORTS = ("40P01", "55P03", "57014", "40001")
# The retry service (runner-app.md section 3): its 'retrying' breaks chk_executions_status on a
# database the runner's migrations built; running is the vocabulary's word for it.
RETRY = (
    "UPDATE executions SET status = 'running', retry_count = retry_count + 1, "
    "last_retry_at = NOW(), retry_history = coalesce(retry_history, '[]'::jsonb) || "
    "jsonb_build_array(jsonb_build_object('attempt', retry_count + 1, 'timestamp', NOW(), "
    "'status', 'retrying')) WHERE id = %s"
)
DIRECT = (
    "INSERT INTO executions (job_id, provider_id, region, status, started_at, completed_at, "
    "output_data, model_id, question_id, created_at) VALUES (%s, 'modal', %s, 'completed', "
    "now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', %s, %s, %s, now() AT TIME ZONE 'UTC')"
)


@dataclass
class Outcome:
    """What a stress run did: statements by kind, their failures by SQLSTATE, hangs."""

    statements: Counter[str] = field(default_factory=Counter)
    aborted: Counter[str] = field(default_factory=Counter)
    hangs: int = 0
    backfill_runs: int = 0
    deferred: int = 0
    verify_runs: int = 0
    errors: list[str] = field(default_factory=list)
    mirror_errors: list[str] = field(default_factory=list)  # those of MIRROR_ABORTS

    @property
    def mirror_aborts(self) -> int:
        """Statements aborted the way the mirror could abort them."""
        return sum(n for k, n in self.aborted.items() if k.split()[-1] in MIRROR_ABORTS)

    def summary(self) -> str:
        lines = [
            f"statements run: {sum(self.statements.values())} "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.statements.items())),
            "statements aborted: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.aborted.items())) or "0"),
            f"of which deadlocks, lock or statement timeouts, serialisation failures: "
            f"{self.mirror_aborts}",
            f"hangs (over {HANG_SECONDS} s): {self.hangs}",
            f"backfill runs: {self.backfill_runs} (changes deferred, busy rows: {self.deferred}); "
            f"verify runs: {self.verify_runs}",
        ]
        # the mirror's aborts first (with their locks), then the runner's own
        return "\n".join(lines + (self.mirror_errors + self.errors)[:10])


def _spec(jobspec_id: str, questions: list[str]) -> dict[str, Any]:
    return seed.jobspec(jobspec_id, regions=REGIONS, models=MODELS, questions=questions)


class _Worker(threading.Thread):
    def __init__(
        self,
        dsn: str,
        jobs: list[tuple[int, str]],
        deadline: float,
        out: Outcome,
        lock: threading.Lock,
        rng: random.Random,
    ) -> None:
        super().__init__(daemon=True)
        self.dsn, self.jobs, self.deadline, self.out, self.lock, self.rng = (
            dsn,
            jobs,
            deadline,
            out,
            lock,
            rng,
        )

    def count(self, kind: str, error: BaseException | None = None, seconds: float = 0.0) -> None:
        with self.lock:
            self.out.statements[kind] += 1
            if seconds > HANG_SECONDS:
                self.out.hangs += 1
            if error is not None:
                state = getattr(error, "sqlstate", None) or type(error).__name__
                self.out.aborted[f"{kind} {state}"] += 1
                message = f"{kind}: {state} {str(error).splitlines()[0]}"
                diag = getattr(error, "diag", None)
                if state not in MIRROR_ABORTS:
                    self.out.errors.append(message)
                    return
                if diag is not None:
                    # which locks, and where in which trigger: what a fix needs to know
                    message += "".join(
                        f"\n    {label}: {text}"
                        for label, text in (
                            ("detail", diag.message_detail),
                            ("context", diag.context),
                        )
                        if text
                    )
                self.out.mirror_errors.append(message)

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SET lock_timeout = 0")
            conn.execute(f"SET statement_timeout = '{HANG_SECONDS + 30}s'")
            while time.monotonic() < self.deadline:
                job, jobspec_id = self.rng.choice(self.jobs)
                action = self.rng.choices(
                    [
                        "region",
                        "direct",
                        "cancel",
                        "retry",
                        "delete_run",
                        "respec",
                        "delete_direct",
                    ],
                    weights=[8, 2, 1, 2, 1, 1, 1],
                )[0]
                getattr(self, action)(conn, job, jobspec_id)

    def timed(self, kind: str, conn: psycopg.Connection[Any], query: str, params: Any) -> Any:
        started = time.monotonic()
        try:
            result = conn.execute(query, params)
        except psycopg.Error as exc:
            self.count(kind, exc, time.monotonic() - started)
            return None
        self.count(kind, None, time.monotonic() - started)
        return result

    def call(self, kind: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            result = fn(*args, **kwargs)
        except psycopg.Error as exc:
            self.count(kind, exc, time.monotonic() - started)
            return None
        except InvalidArgumentError:  # its region result or run was deleted meanwhile
            self.count(f"{kind} (gone)", None, time.monotonic() - started)
            return None
        self.count(kind, None, time.monotonic() - started)
        return result

    def region(self, conn: psycopg.Connection[Any], job: int, jobspec_id: str) -> None:
        """One region recorded through the writer, each statement its own transaction, into
        the job's newest run (a new one now and then)."""
        row = conn.execute(
            "SELECT id FROM cross_region_executions WHERE jobspec_id = %s "
            "ORDER BY started_at DESC LIMIT 1",
            (jobspec_id,),
        ).fetchone()
        run = (
            row[0]
            if row and self.rng.random() > 0.2
            else self.call("start_run", writer.start_run, conn, jobspec_id, regions=REGIONS)
        )
        if run is None:
            return
        region = self.rng.choice(REGIONS)
        rid = self.call("start_region", writer.start_region, conn, run, region, provider_id="p")
        if rid is None:
            return
        t0 = datetime.now(UTC)
        pairs = [(m, q) for m in MODELS for q in QUESTIONS]
        self.rng.shuffle(pairs)
        for i, (m, q) in enumerate(pairs[: self.rng.randint(0, len(pairs))]):
            status = self.rng.choice(["completed", "completed", "failed", "running"])
            self.call(
                "record_pair",
                writer.record_pair,
                conn,
                rid,
                model_id=m,
                question_id=q,
                status=status,
                started_at=t0,
                completed_at=None if status == "running" else t0 + timedelta(seconds=i),
                output={"response": f"{m}/{q}"} if status == "completed" else None,
            )
        if self.rng.random() < 0.8:
            self.call("finish_region", writer.finish_region, conn, rid)

    def direct(self, conn: psycopg.Connection[Any], job: int, jobspec_id: str) -> None:
        self.timed(
            "direct_insert",
            conn,
            DIRECT,
            (
                job,
                self.rng.choice(REGIONS),
                Jsonb({"response": "runner"}),
                self.rng.choice(MODELS),
                self.rng.choice(QUESTIONS),
            ),
        )

    def cancel(self, conn: psycopg.Connection[Any], job: int, jobspec_id: str) -> None:
        self.timed("cancel", conn, RUNNER_CANCEL, (job,))

    def retry(self, conn: psycopg.Connection[Any], job: int, jobspec_id: str) -> None:
        row = conn.execute(
            "SELECT id FROM executions WHERE job_id = %s ORDER BY random() LIMIT 1", (job,)
        ).fetchone()
        if row:
            self.timed("retry", conn, RETRY, (row[0],))

    def delete_run(self, conn: psycopg.Connection[Any], job: int, jobspec_id: str) -> None:
        row = conn.execute(
            "SELECT id FROM cross_region_executions WHERE jobspec_id = %s "
            "ORDER BY random() LIMIT 1",
            (jobspec_id,),
        ).fetchone()
        if row:
            self.timed(
                "delete_run", conn, "DELETE FROM cross_region_executions WHERE id = %s", (row[0],)
            )

    def respec(self, conn: psycopg.Connection[Any], job: int, jobspec_id: str) -> None:
        questions = QUESTIONS[: self.rng.randint(1, len(QUESTIONS))]
        self.timed(
            "respec",
            conn,
            "UPDATE jobs SET jobspec_data = %s WHERE id = %s",
            (Jsonb(_spec(jobspec_id, questions)), job),
        )

    def delete_direct(self, conn: psycopg.Connection[Any], job: int, jobspec_id: str) -> None:
        row = conn.execute(
            "SELECT id FROM executions WHERE job_id = %s AND mirror_region_result_id IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM transparency_log t WHERE t.execution_id = executions.id)"
            " ORDER BY random() LIMIT 1",
            (job,),
        ).fetchone()
        if row:
            self.timed("delete_direct", conn, "DELETE FROM executions WHERE id = %s", (row[0],))


def _loop(dsn: str, deadline: float, out: Outcome, lock: threading.Lock, what: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            try:
                if what == "backfill":
                    summary = backfill.backfill(conn, batch_size=50)
                    with lock:
                        out.backfill_runs += 1
                        out.deferred += summary.deferred
                else:
                    verify.verify(conn)
                    with lock:
                        out.verify_runs += 1
            except Exception as exc:  # reported, never raised: the runner's side is measured
                with lock:
                    out.errors.append(f"{what}: {type(exc).__name__} {str(exc).splitlines()[0]}")
            time.sleep(0.2)


def run(dsn: str, *, threads: int, seconds: float, jobs: int = 2, seed_value: int = 1) -> Outcome:
    """Run the mix on *jobs* jobs with *threads* workers for *seconds*, plus one backfill and
    one verify loop; return the outcome. The database is left as the run leaves it."""
    out = Outcome()
    lock = threading.Lock()
    rng = random.Random(seed_value)
    made = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for k in range(jobs):
            jobspec_id = f"bias-detection-stress-{uuid.uuid4().hex[:8]}-{k}"
            made.append((writer.create_job(conn, _spec(jobspec_id, QUESTIONS)), jobspec_id))
    deadline = time.monotonic() + seconds
    workers: list[threading.Thread] = [
        _Worker(dsn, made, deadline, out, lock, random.Random(rng.random())) for _ in range(threads)
    ]
    workers += [
        threading.Thread(target=_loop, args=(dsn, deadline, out, lock, what), daemon=True)
        for what in ("backfill", "verify")
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + HANG_SECONDS + 120)
        if w.is_alive():
            out.hangs += 1
    return out
