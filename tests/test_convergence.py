"""Random sequences of what happens to a runner database, and what must hold after each step
(hypothesis' stateful testing, against a real PostgreSQL).

The steps: jobs created, their specs changed, their jobspec_id renamed, or created after their
run; runs started (with or without a job) and deleted; region results inserted in the
runner's legacy format, in the writer's format or empty; pairs recorded through the writer;
regions finished with any status; direct executions rows inserted (also with '' and NULL
question ids), moved to another key and deleted; the runner's cancel of a mirrored row; a
transparency-log reference; region results written, changed or deleted while the triggers
are skipped; the backfill.

After every step (SPEC "Materialising the rule", "The view"): the runner's naive read never
shows a mirrored row beside a direct one; every region result the state calls mirrored has
exactly the oracle's rows (test_backfill's Python re-implementation of the rule); the view
shows one row per key. After a backfill, and at the end of every sequence: the backfill
changed nothing the view shows, nothing is left unmirrored, executions equals the oracle,
verify exits 0 and a second backfill writes nothing.

Found this way, and fixed: a mirrored row of a region result without a job, detached by the
runner's cancel, left its pair unmirrored (the trigger thought the row owned a key it cannot
have); such a row, kept for the transparency log after its region result was deleted, was
missing from the view until a backfill; after a region result was deleted while triggers were
skipped, deleting its run failed on executions' foreign key, and a direct row arriving for
one of its keys stood beside its leftover mirrored row.
"""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from factories import (
    element,
    legacy_output,
    make_direct_execution,
    make_job,
    make_region_result,
    make_run,
    small_spec,
    unique_jobspec_id,
)
from helpers import (
    T0,
    assert_one_mirrored_row_per_key,
    new_york,
    not_mirrored,
    triggers_skipped,
    view_rows,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from oracle import assert_matches_oracle
from psycopg.types.json import Jsonb

from beaconsql import backfill, verify, writer

# The specs a job may have: the models and questions its region results are judged by.
SPECS = {
    "two_by_two": (["m1", "m2"], ["q1", "q2"]),
    "one_by_three": (["m1"], ["q1", "q2", "q3"]),
    "malformed": ("not a list", [7, "q1"]),
}
# Pairs a step may record: inside every spec's grid, and one outside all of them.
PAIRS = [("m1", "q1"), ("m1", "q2"), ("m2", "q1"), ("m2", "q2"), ("m1", "q3"), ("mx", "qx")]
REGIONS = ("US", "EU")
FINISHED = ("success", "failed", "timeout", "cancelled", "exploded")
# Sequences per run (each up to 20 steps): BEACONSQL_CONVERGENCE_EXAMPLES=500 for a long hunt.
EXAMPLES = int(os.environ.get("BEACONSQL_CONVERGENCE_EXAMPLES", "25"))


class RunnerDatabase(RuleBasedStateMachine):
    """One runner database, emptied at the start of every sequence."""

    conn: psycopg.Connection[Any]
    dsn: str

    def __init__(self) -> None:
        super().__init__()
        # Each sequence starts from an empty database, so that a failing one replays alone.
        self.conn.execute(
            "TRUNCATE transparency_log, executions, region_results, cross_region_executions, "
            "jobs, region_results_mirror_state, region_results_mirror_anomalies, "
            "region_results_backfill_runs CASCADE"
        )
        self.jobs: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.region_results: list[uuid.UUID] = []
        self.direct_rows: list[int] = []
        self.backfills = 0

    # -- the runner and the writer -----------------------------------------------------------

    @rule(spec=st.sampled_from(sorted(SPECS)))
    def create_job(self, spec: str) -> None:
        models, questions = SPECS[spec]
        jobspec_id = unique_jobspec_id("convergence")
        data = small_spec(models, questions, jobspec_id=jobspec_id)
        self.jobs.append(make_job(self.conn, jobspec_id=jobspec_id, jobspec_data=data))

    @rule(data=st.data(), orphan=st.booleans())
    def start_run(self, data: st.DataObject, orphan: bool) -> None:
        if orphan or not self.jobs:
            self.runs.append(make_run(self.conn))  # a run whose job row is missing
        else:
            job = data.draw(st.sampled_from(self.jobs))
            self.runs.append(make_run(self.conn, jobspec_id=job["jobspec_id"]))

    @precondition(lambda self: self.runs)
    @rule(
        data=st.data(),
        region=st.sampled_from(REGIONS),
        shape=st.sampled_from(["empty", "legacy", "elements"]),
    )
    def insert_region_result(self, data: st.DataObject, region: str, shape: str) -> None:
        run = data.draw(st.sampled_from(self.runs))
        values: dict[str, Any] = {"cross_region_execution_id": run["id"], "region": region}
        if shape == "legacy":
            model = data.draw(st.sampled_from(["m1", "m2", "unknown"]))
            values.update(
                status="success",
                completed_at=T0 + timedelta(minutes=1),
                execution_output=legacy_output(model),
            )
        elif shape == "elements":
            pairs = data.draw(st.lists(st.sampled_from(PAIRS), max_size=4))
            status = data.draw(st.sampled_from(["completed", "failed", "running", "weird"]))
            values["execution_output"] = {"executions": [element(m, q, status) for m, q in pairs]}
        self.region_results.append(make_region_result(self.conn, **values)["id"])

    @precondition(lambda self: self.region_results)
    @rule(
        data=st.data(),
        pair=st.sampled_from(PAIRS),
        status=st.sampled_from(writer.PAIR_STATUSES),
    )
    def record_pair(self, data: st.DataObject, pair: tuple[str, str], status: str) -> None:
        rid = data.draw(st.sampled_from(self.region_results))
        if not self._exists(rid):
            return
        model_id, question_id = pair
        writer.record_pair(
            self.conn,
            rid,
            model_id=model_id,
            question_id=question_id,
            status=status,
            started_at=T0,
            completed_at=None if status in ("pending", "running") else T0 + timedelta(seconds=3),
            output={"response": f"answer {model_id}/{question_id}"},
        )

    @precondition(lambda self: self.region_results)
    @rule(data=st.data(), status=st.sampled_from(FINISHED))
    def finish_region(self, data: st.DataObject, status: str) -> None:
        rid = data.draw(st.sampled_from(self.region_results))
        self.conn.execute(
            "UPDATE region_results SET status = %s, completed_at = %s, error_message = %s "
            "WHERE id = %s",
            (status, T0 + timedelta(minutes=2), "" if status == "success" else "boom", rid),
        )

    @precondition(lambda self: self.jobs)
    @rule(
        data=st.data(),
        region=st.sampled_from(REGIONS),
        pair=st.sampled_from(PAIRS),
        question=st.sampled_from(["pair's", "", None]),
    )
    def insert_direct_row(
        self, data: st.DataObject, region: str, pair: tuple[str, str], question: str | None
    ) -> None:
        """The runner's own row; '' and NULL question ids: its legacy rows before 007_."""
        job = data.draw(st.sampled_from(self.jobs))
        row = make_direct_execution(
            self.conn,
            job_id=job["id"],
            region=region,
            model_id=pair[0],
            question_id=pair[1] if question == "pair's" else question,
        )
        self.direct_rows.append(row["id"])

    @precondition(lambda self: self.direct_rows)
    @rule(data=st.data(), pair=st.sampled_from(PAIRS))
    def move_direct_row(self, data: st.DataObject, pair: tuple[str, str]) -> None:
        """A hand fix of a direct row's key: the key it leaves goes back to the mirror."""
        row_id = data.draw(st.sampled_from(self.direct_rows))
        self.conn.execute(
            "UPDATE executions SET model_id = %s, question_id = %s WHERE id = %s",
            (pair[0], pair[1], row_id),
        )

    @precondition(lambda self: self.direct_rows)
    @rule(data=st.data())
    def delete_direct_row(self, data: st.DataObject) -> None:
        row_id = data.draw(st.sampled_from(self.direct_rows))
        self.direct_rows.remove(row_id)
        # A row the transparency log references stays (its foreign key restricts deletes).
        self.conn.execute(
            "DELETE FROM executions e WHERE e.id = %s AND NOT EXISTS "
            "(SELECT 1 FROM transparency_log t WHERE t.execution_id = e.id)",
            (row_id,),
        )

    @rule(pick=st.integers(min_value=0))
    def runner_cancels_a_mirrored_row(self, pick: int) -> None:
        """The runner's cancel (runner-app.md section 2.3) on a mirrored row: it detaches."""
        ids = self._mirrored_row_ids()
        if ids:
            row_id = ids[pick % len(ids)]
            self.conn.execute("UPDATE executions SET status = 'cancelled' WHERE id = %s", (row_id,))
            self.direct_rows.append(row_id)

    @rule(pick=st.integers(min_value=0))
    def log_a_mirrored_row(self, pick: int) -> None:
        """A transparency-log entry for a mirrored row: the mirror may never delete it."""
        ids = self._mirrored_row_ids()
        if ids:
            row_id = ids[pick % len(ids)]
            self.conn.execute(
                "INSERT INTO transparency_log (execution_id, job_id, region, provider_id, status) "
                "SELECT id, coalesce(job_id::text, ''), region, provider_id, status "
                "FROM executions WHERE id = %s",
                (row_id,),
            )

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), spec=st.sampled_from(sorted(SPECS)))
    def change_spec(self, data: st.DataObject, spec: str) -> None:
        job = data.draw(st.sampled_from(self.jobs))
        models, questions = SPECS[spec]
        self.conn.execute(
            "UPDATE jobs SET jobspec_data = %s WHERE id = %s",
            (Jsonb(small_spec(models, questions, jobspec_id=job["jobspec_id"])), job["id"]),
        )

    @precondition(lambda self: self.runs)
    @rule(data=st.data(), spec=st.sampled_from(sorted(SPECS)))
    def job_arrives_after_its_run(self, data: st.DataObject, spec: str) -> None:
        """A run whose jobs row was missing gets one: its region results gain a job."""
        run = data.draw(st.sampled_from(self.runs))
        if any(job["jobspec_id"] == run["jobspec_id"] for job in self.jobs):
            return
        models, questions = SPECS[spec]
        data_ = small_spec(models, questions, jobspec_id=run["jobspec_id"])
        self.jobs.append(make_job(self.conn, jobspec_id=run["jobspec_id"], jobspec_data=data_))

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def rename_jobspec_id(self, data: st.DataObject) -> None:
        """A jobs row's jobspec_id changes: its runs lose their job (theirs keep the old id)."""
        job = data.draw(st.sampled_from(self.jobs))
        renamed = unique_jobspec_id("renamed")
        self.conn.execute("UPDATE jobs SET jobspec_id = %s WHERE id = %s", (renamed, job["id"]))
        job["jobspec_id"] = renamed

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def delete_run(self, data: st.DataObject) -> None:
        """The run goes; its region results cascade, and their mirrored rows with them (one the
        transparency log references is detached instead)."""
        run = data.draw(st.sampled_from(self.runs))
        self.runs.remove(run)
        self.conn.execute("DELETE FROM cross_region_executions WHERE id = %s", (run["id"],))

    # -- behind the triggers' back -------------------------------------------------------------

    @precondition(lambda self: self.region_results)
    @rule(
        data=st.data(),
        change=st.sampled_from(["finish", "append", "delete"]),
        pair=st.sampled_from(PAIRS),
    )
    def write_while_triggers_skipped(
        self, data: st.DataObject, change: str, pair: tuple[str, str]
    ) -> None:
        rid = data.draw(st.sampled_from(self.region_results))
        with triggers_skipped(self.conn, ("region_results",)):
            if change == "finish":
                self.conn.execute(
                    "UPDATE region_results SET status = 'failed', error_message = 'lost', "
                    "completed_at = %s WHERE id = %s",
                    (T0 + timedelta(minutes=3), rid),
                )
            elif change == "append":
                self.conn.execute(
                    "UPDATE region_results SET execution_output = jsonb_build_object("
                    "'executions', coalesce(execution_output -> 'executions', '[]') || %s) "
                    "WHERE id = %s",
                    (Jsonb([element(*pair)]), rid),
                )
            else:
                self.conn.execute("DELETE FROM region_results WHERE id = %s", (rid,))

    @rule()
    def backfill_and_check(self) -> None:
        self.backfills += 1
        self._backfill_and_check()

    # -- what must hold ------------------------------------------------------------------------

    @invariant()
    def naive_read_has_one_row_per_key(self) -> None:
        assert_one_mirrored_row_per_key(self.conn)

    @invariant()
    def mirrored_region_results_have_the_rules_rows(self) -> None:
        stale = not_mirrored(self.conn)
        mirrored = [r[0] for r in self.conn.execute("SELECT id FROM region_results")]
        assert_matches_oracle(self.conn, [r for r in mirrored if r not in stale])

    @invariant()
    def view_shows_one_row_per_key(self) -> None:
        repeated = self.conn.execute(
            "SELECT jobspec_id, job_id, region, model_id, nullif(question_id, ''), count(*) "
            "FROM executions_unified WHERE job_id IS NOT NULL "
            "GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1"
        ).fetchall()
        assert repeated == []

    def teardown(self) -> None:
        self._backfill_and_check()

    # -- helpers ---------------------------------------------------------------------------------

    def _exists(self, rid: uuid.UUID) -> bool:
        row = self.conn.execute("SELECT 1 FROM region_results WHERE id = %s", (rid,)).fetchone()
        return row is not None

    def _mirrored_row_ids(self) -> list[int]:
        """Mirrored rows of this sequence's region results (picked by index: what hypothesis
        draws must not depend on the database)."""
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM executions WHERE mirror_region_result_id = ANY(%s) ORDER BY id",
                (self.region_results,),
            )
        ]

    def _backfill_and_check(self) -> None:
        """SPEC: a backfill never changes what the view shows, and after it nothing drifts."""
        shown = view_rows(self.conn)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            first = backfill.backfill(new_york(conn), batch_size=3)
            assert first.complete
            assert view_rows(self.conn) == shown
            assert not_mirrored(self.conn) == set()
            assert_matches_oracle(self.conn)
            report = verify.verify(conn)
            assert report.exit_code == 0, report.to_dict()
            again = backfill.backfill(conn)
            assert again.changed == 0, again.to_dict()


@pytest.mark.slow
def test_random_histories_converge(db: psycopg.Connection[Any], dsn: str) -> None:
    RunnerDatabase.conn = db
    RunnerDatabase.dsn = dsn
    run_state_machine_as_test(
        RunnerDatabase,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
