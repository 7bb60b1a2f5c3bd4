"""The mirror's triggers: which region results a statement touched, handed to apply (SPEC
"Materialising the rule into executions": follows its inputs, a region result's UPDATE and
DELETE, a run's DELETE, a jobs row arriving late or its spec changing; detach; any writer, at
any depth: a change made by another trigger or function is mirrored, detached or forgotten
exactly as the same statement run directly).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from factories import (
    FINISHED_AT,
    NAIVE_START,
    STARTED_AT,
    element,
    job_and_run,
    make_direct_execution,
    make_job,
    make_region_result,
    make_run,
    record,
    record_running,
    small_spec,
    unique_jobspec_id,
    writer_region,
)
from helpers import (
    RUNNER_CANCEL,
    anomaly_kinds,
    assert_one_row_per_key_of_job,
    executions_xmins,
    fetch,
    job_rows,
    keys_of,
    mirrored,
    pairs,
    sequence_state,
    shown_pairs,
)
from psycopg import sql
from psycopg.types.json import Jsonb

from beaconsql import backfill, roles, seed, verify, writer

# --------------------------------------------------------------------------------------------
# Follows its inputs: UPDATE and DELETE of a region result, DELETE of a run
# --------------------------------------------------------------------------------------------


def test_region_results_mirror_update_pair_changes_status(db):
    spec = small_spec(models=("m1", "m2"), questions=("q1",))
    _, _, rid = writer_region(db, spec)
    # A running region stores nothing yet: the view derives its placeholders.
    assert pairs(db, rid) == {}
    assert shown_pairs(db, rid) == {
        ("m1", "q1"): ("running", None, 1),
        ("m2", "q1"): ("running", None, 1),
    }

    record(db, rid, "m1", "q1", "completed")
    assert pairs(db, rid) == {("m1", "q1"): ("completed", None, 3)}
    row = mirrored(db, rid)[0]
    assert row["output_data"] == {"response": "answer m1/q1"}
    assert (row["started_at"], row["completed_at"], row["created_at"]) == (
        NAIVE_START,
        NAIVE_START + timedelta(seconds=3),
        NAIVE_START,
    )

    # The writer replaces the pair's element: the same row follows, now failed.
    before = {r["model_id"]: r["id"] for r in mirrored(db, rid)}
    record(
        db,
        rid,
        "m1",
        "q1",
        "failed",
        error="timeout after 300s",
        completed_at=STARTED_AT + timedelta(seconds=9),
    )
    rows = mirrored(db, rid)
    assert {r["model_id"]: r["id"] for r in rows} == before
    m1 = rows[0]
    assert (m1["status"], m1["original_error"], m1["output_data"], m1["completed_at"]) == (
        "failed",
        "timeout after 300s",
        None,
        NAIVE_START + timedelta(seconds=9),
    )
    assert shown_pairs(db, rid)[("m2", "q1")] == ("running", None, 1)


def test_region_results_mirror_update_pair_disappears_from_elements(db):
    job, run = job_and_run(db, models=("m1", "m2"), questions=("q1",))
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        status="success",
        completed_at=FINISHED_AT,
        error_message="",
        execution_output={"executions": [element("m1", "q1"), element("extra", "q9")]},
    )
    assert pairs(db, rr["id"]) == {
        ("extra", "q9"): ("completed", None, 3),  # outside models x questions: still mirrored
        ("m1", "q1"): ("completed", None, 3),
        ("m2", "q1"): ("failed", "no result recorded", 1),
    }
    db.execute(
        "UPDATE region_results SET execution_output = %s WHERE id = %s",
        (Jsonb({"executions": [element("m2", "q1")]}), rr["id"]),
    )
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("failed", "no result recorded", 1),
        ("m2", "q1"): ("completed", None, 3),
    }
    assert len(job_rows(db, job["id"])) == 2


def test_region_results_mirror_update_pair_appears(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        execution_output={"executions": [element("m1", "q1")]},
    )
    assert pairs(db, rr["id"]) == {("m1", "q1"): ("completed", None, 3)}
    db.execute(
        "UPDATE region_results SET execution_output = jsonb_set(execution_output, "
        "'{executions}', (execution_output -> 'executions') || %s) WHERE id = %s",
        (Jsonb([element("m2", "q7", "running", completed_at=None, output=None)]), rr["id"]),
    )
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m2", "q7"): ("running", None, 3),
    }
    new = next(r for r in mirrored(db, rr["id"]) if r["model_id"] == "m2")
    assert (new["job_id"], new["region"], new["provider_id"], new["completed_at"]) == (
        job["id"],
        "US",
        "modal-us-east",
        None,
    )


def test_region_results_mirror_delete_removes_its_rows_only(db):
    run = seed.record_with_writer(db, seed.jobspec())
    us, eu = run.region_result_ids["US"], run.region_result_ids["EU"]
    assert len(mirrored(db, us)) == len(mirrored(db, eu)) == 9
    db.execute("DELETE FROM region_results WHERE id = %s", (us,))
    assert mirrored(db, us) == []
    assert len(mirrored(db, eu)) == 9
    assert {r["region"] for r in job_rows(db, run.job_id)} == {"EU"}
    assert db.execute(
        "SELECT count(*) FROM region_results_mirror_state WHERE region_result_id = %s", (us,)
    ).fetchone() == (0,)


def test_region_results_mirror_update_moved_to_another_run_follows(db):
    job_a, run_a = job_and_run(db, models=("m1",), questions=("q1",))
    job_b, run_b = job_and_run(db, models=("m2",), questions=("q1",))
    rr = make_region_result(
        db,
        cross_region_execution_id=run_a["id"],
        execution_output={"executions": [element("m2", "q1")]},
    )
    assert pairs(db, rr["id"]) == {("m2", "q1"): ("completed", None, 3)}
    assert shown_pairs(db, rr["id"])[("m1", "q1")] == ("running", None, 1)  # a placeholder
    db.execute(
        "UPDATE region_results SET cross_region_execution_id = %s, region = 'EU' WHERE id = %s",
        (run_b["id"], rr["id"]),
    )
    assert pairs(db, rr["id"]) == {("m2", "q1"): ("completed", None, 3)}
    assert job_rows(db, job_a["id"]) == []
    assert [(r["region"], r["cross_region_execution_id"]) for r in job_rows(db, job_b["id"])] == [
        ("EU", run_b["id"])
    ]


def test_cross_region_executions_mirror_delete_run_removes_mirrored_rows(db):
    run = seed.record_with_writer(db, seed.jobspec())
    direct = make_direct_execution(
        db, job_id=run.job_id, region="ASIA", model_id="m9", question_id="q9"
    )
    assert len(job_rows(db, run.job_id)) == 19
    db.execute("DELETE FROM cross_region_executions WHERE id = %s", (run.run_id,))
    assert db.execute(
        "SELECT count(*) FROM region_results WHERE cross_region_execution_id = %s", (run.run_id,)
    ).fetchone() == (0,)
    assert [r["id"] for r in job_rows(db, run.job_id)] == [direct["id"]]
    assert db.execute(
        "SELECT count(*) FROM executions WHERE mirror_region_result_id IS NOT NULL"
    ).fetchone() == (0,)


# --------------------------------------------------------------------------------------------
# A jobs row arriving late, a spec changing
# --------------------------------------------------------------------------------------------


def test_jobs_mirror_late_job_remirrors_writer_rows_with_real_models_and_job_id(db):
    spec = seed.jobspec(unique_jobspec_id())
    run = seed.record_with_writer(db, spec, create_job=False)
    ids = list(run.region_result_ids.values())
    before = fetch(db, "SELECT * FROM executions WHERE mirror_region_result_id = ANY(%s)", (ids,))
    assert len(before) == 20  # 18 recorded pairs + the fallback pair (llama3.2-1b, default) x 2
    assert {r["job_id"] for r in before} == {None}
    fallback = [r for r in before if r["question_id"] == "default"]
    assert {
        (r["model_id"], r["status"], r["original_error"], r["mirror_evidence"]) for r in fallback
    } == {("llama3.2-1b", "failed", "no result recorded", 1)}
    assert anomaly_kinds(db, ids[0]) == ["missing_job"]

    job_id = writer.create_job(db, spec)
    rows = assert_one_row_per_key_of_job(db, job_id)
    assert len(rows) == 18
    assert {r["mirror_region_result_id"] for r in rows} == set(ids)
    assert {(r["status"], r["mirror_evidence"]) for r in rows} == {("completed", 3)}
    assert db.execute("SELECT count(*) FROM executions WHERE job_id IS NULL").fetchone() == (0,)


def test_jobs_mirror_late_job_remirrors_legacy_rows(db):
    spec = seed.jobspec(unique_jobspec_id())
    run = seed.record_legacy(db, spec, create_job=False)
    ids = list(run.region_result_ids.values())
    before = fetch(db, "SELECT * FROM executions WHERE mirror_region_result_id = ANY(%s)", (ids,))
    assert {
        (r["job_id"], r["model_id"], r["question_id"], r["status"], r["mirror_evidence"])
        for r in before
    } == {(None, "llama3.2-1b", "default", "completed", 2)}
    assert len(before) == 2

    job = make_job(db, jobspec_id=spec["id"], jobspec_data=spec)
    rows = assert_one_row_per_key_of_job(db, job["id"])
    assert len(rows) == 18
    assert sorted(
        (r["region"], r["model_id"], r["question_id"]) for r in rows if r["status"] == "completed"
    ) == [("EU", "llama3.2-1b", "greatest_invention"), ("US", "llama3.2-1b", "greatest_invention")]
    assert len([r for r in rows if r["status"] == "failed"]) == 16
    assert db.execute("SELECT count(*) FROM executions WHERE job_id IS NULL").fetchone() == (0,)


def test_jobs_mirror_spec_update_remirrors_new_questions(db):
    spec = small_spec(models=("m1",), questions=("q1",))
    job, run = job_and_run(db, spec=spec)
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        status="success",
        completed_at=FINISHED_AT,
        execution_output={"executions": [element("m1", "q1")]},
    )
    spec["questions"] = ["q1", "q2"]
    spec["metadata"]["models"] = ["m1", "m3"]
    db.execute("UPDATE jobs SET jobspec_data = %s WHERE id = %s", (Jsonb(spec), job["id"]))
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m1", "q2"): ("failed", "no result recorded", 1),
        ("m3", "q1"): ("failed", "no result recorded", 1),
        ("m3", "q2"): ("failed", "no result recorded", 1),
    }


def test_jobs_mirror_spec_update_of_a_field_the_rule_does_not_read_writes_nothing(db):
    run = seed.record_with_writer(db, seed.jobspec())
    seq, xmins = sequence_state(db), executions_xmins(db)
    spec = seed.jobspec()
    spec["metadata"]["estimated_cost"] = 0.42
    db.execute(
        "UPDATE jobs SET jobspec_data = %s, status = 'completed' WHERE id = %s",
        (Jsonb(spec), run.job_id),
    )
    db.execute("UPDATE jobs SET jobspec_data = jobspec_data WHERE id = %s", (run.job_id,))
    assert (sequence_state(db), executions_xmins(db)) == (seq, xmins)


def test_region_results_update_of_only_the_type_of_malformed_executions_records_it(db):
    """Repro (found by the rule's property test): a region result whose
    execution_output.executions is an object, updated to a string with the same legacy answer:
    the rule now reports "is string, not an array", and that anomaly is recorded."""
    _, run = job_and_run(db, models=["m1"], questions=["q1"])
    legacy = {"response": "legacy", "metadata": {"model": "m1"}}
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        status="success",
        completed_at=FINISHED_AT,
        execution_output={"executions": {"m1": 1}, "data": legacy},
    )
    db.execute(
        "UPDATE region_results SET execution_output = %s WHERE id = %s",
        (Jsonb({"executions": "x", "data": legacy}), rr["id"]),
    )
    details = [
        r[0]
        for r in db.execute(
            "SELECT detail FROM region_results_mirror_anomalies "
            "WHERE region_result_id = %s AND kind = 'malformed_executions' ORDER BY detail",
            (rr["id"],),
        )
    ]
    assert details == [
        "execution_output.executions is object, not an array",
        "execution_output.executions is string, not an array",
    ]
    state = db.execute(
        "SELECT mirrored FROM region_results_mirror_inputs WHERE region_result_id = %s",
        (rr["id"],),
    ).fetchone()
    assert state == (True,)


def test_a_started_region_result_records_its_placeholders_anomalies_at_once(db):
    """Repro (found by the rule's property test): a job whose model id is over 50 characters,
    and a region result just started (no output, nothing stored): the rule reports that pair
    as not mirrored (id_too_long), and the anomaly is recorded at the INSERT, not only once the
    region finishes. It stays recorded through an UPDATE that changes nothing the rule reads."""
    model_id = "m" * 51
    _, run = job_and_run(db, models=[model_id], questions=["q1"])
    rr = make_region_result(db, cross_region_execution_id=run["id"])
    assert anomaly_kinds(db, rr["id"]) == ["id_too_long"]
    db.execute(
        "UPDATE region_results SET execution_output = execution_output WHERE id = %s",
        (rr["id"],),
    )
    assert anomaly_kinds(db, rr["id"]) == ["id_too_long"]
    assert db.execute(
        "SELECT count(*) FROM executions_unified WHERE region_result_id = %s", (rr["id"],)
    ).fetchone() == (0,)


def test_region_results_update_of_a_field_the_rule_does_not_read_runs_no_rule(db):
    """A region result holding 10k elements (copies of one, then its own): an UPDATE of its
    metadata alone (a field the rule does not read) records the new version and derives
    nothing: the rule runs zero times (PostgreSQL's per-function call counts), nothing in
    executions changes, and the region result stays mirrored. (Once: every change re-derived
    every element, 1.5 s against 4 ms.)"""
    run = seed.record_with_writer(db, seed.jobspec())
    region_result_id = next(iter(run.region_result_ids.values()))
    db.execute(
        "UPDATE region_results SET execution_output = jsonb_set(execution_output, "
        "'{executions}', (SELECT jsonb_agg(x.first) FROM generate_series(1, 10000), "
        "LATERAL (SELECT execution_output -> 'executions' -> 0) x(first)) "
        "|| (execution_output -> 'executions')) "
        "WHERE id = %s",
        (region_result_id,),
    )
    seq, xmins = sequence_state(db), executions_xmins(db)
    db.execute("SET track_functions = 'pl'")
    with db.transaction():
        db.execute(
            "UPDATE region_results SET metadata = jsonb_build_object('note', 'reviewed') "
            "WHERE id = %s",
            (region_result_id,),
        )
        calls = {
            name: n
            for name, n in db.execute(
                "SELECT funcname::text, sum(calls) FROM pg_stat_xact_user_functions "
                "WHERE funcname IN ('region_results_mirror_rows', 'region_results_mirror_update') "
                "GROUP BY 1"
            ).fetchall()
        }
    db.execute("RESET track_functions")
    assert calls == {"region_results_mirror_update": 1}  # the trigger ran, and was counted
    assert (sequence_state(db), executions_xmins(db)) == (seq, xmins)
    assert verify.verify(db).exit_code == 0


# --------------------------------------------------------------------------------------------
# Detach
# --------------------------------------------------------------------------------------------


def test_executions_mirror_detach_runner_cancel_detaches_and_survives_region_update(db):
    spec = small_spec(models=("m1", "m2"), questions=("q1", "q2"))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1", "completed")
    record_running(db, rid, ("m1", "q2"), ("m2", "q1"))
    db.execute(RUNNER_CANCEL, (job_id,))
    rows = assert_one_row_per_key_of_job(db, job_id)
    by_key = {(r["model_id"], r["question_id"]): r for r in rows}
    assert by_key[("m1", "q1")]["mirror_region_result_id"] == rid
    assert by_key[("m1", "q1")]["status"] == "completed"
    cancelled = [by_key[k] for k in [("m1", "q2"), ("m2", "q1")]]
    assert {
        (r["status"], r["mirror_region_result_id"], r["mirror_evidence"]) for r in cancelled
    } == {("cancelled", None, 3)}
    cancelled_ids = {r["id"] for r in cancelled}
    # (m2, q2) had no row: the cancel updates only rows that exist; the view derives it.
    assert shown_pairs(db, rid)[("m2", "q2")] == ("running", None, 1)

    # Later region updates (a pair recorded, the region finished) do not revert them.
    record(db, rid, "m2", "q1", "completed")
    writer.finish_region(db, rid, completed_at=FINISHED_AT)
    rows = assert_one_row_per_key_of_job(db, job_id)
    assert len(rows) == 4
    after = {r["id"]: r for r in rows}
    assert cancelled_ids <= set(after)
    assert {(after[i]["status"], after[i]["mirror_region_result_id"]) for i in cancelled_ids} == {
        ("cancelled", None)
    }
    assert pairs(db, rid) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m2", "q2"): ("failed", "no result recorded", 1),
    }
    # Deleting the region result removes its mirrored rows only: detached rows are direct rows.
    db.execute("DELETE FROM region_results WHERE id = %s", (rid,))
    assert {r["id"] for r in job_rows(db, job_id)} == cancelled_ids


def test_executions_mirror_detach_of_a_row_without_a_job_leaves_its_pair_to_the_mirror(db):
    """A run whose job row is missing yields rows with job_id NULL, which have no key (SPEC
    "Words"). The runner's cancel of one detaches it (a direct row now), but a row without a
    key owns nothing: the region result's pair is mirrored again at once, as a backfill would
    do, and nothing drifts. (Once: the pair stayed unmirrored until a backfill.)"""
    run = make_run(db)  # its jobspec_id has no jobs row
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        execution_output={
            "executions": [element("llama3.2-1b", "default", "running", completed_at=None)]
        },
    )
    [row] = mirrored(db, rr["id"])
    assert (row["job_id"], row["model_id"], row["question_id"]) == (None, "llama3.2-1b", "default")
    db.execute("UPDATE executions SET status = 'cancelled' WHERE id = %s", (row["id"],))
    detached = fetch(db, "SELECT * FROM executions WHERE id = %s", (row["id"],))[0]
    assert (detached["mirror_region_result_id"], detached["status"]) == (None, "cancelled")
    [again] = mirrored(db, rr["id"])
    assert again["id"] != row["id"]
    assert pairs(db, rr["id"]) == {("llama3.2-1b", "default"): ("running", None, 3)}
    report = verify.verify(db)
    assert report.exit_code == 0, report.to_dict()


def test_executions_mirror_detach_retry_update_detaches_and_survives_region_update(db):
    spec = small_spec(models=("m1", "m2"), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1", "completed")
    row = mirrored(db, rid)[0]
    db.execute(
        "UPDATE executions SET status = 'failed', original_error = 'provider 502', "
        "retry_count = retry_count + 1 WHERE id = %s",
        (row["id"],),
    )
    retried = fetch(db, "SELECT * FROM executions WHERE id = %s", (row["id"],))[0]
    assert (
        retried["status"],
        retried["original_error"],
        retried["retry_count"],
        retried["mirror_region_result_id"],
        retried["mirror_evidence"],
    ) == ("failed", "provider 502", 1, None, 3)
    assert retried["output_data"] == {"response": "answer m1/q1"}

    record(db, rid, "m1", "q1", "completed", output={"response": "again"})
    writer.finish_region(db, rid, completed_at=FINISHED_AT)
    rows = assert_one_row_per_key_of_job(db, job_id)
    assert len(rows) == 2
    kept = next(r for r in rows if r["model_id"] == "m1")
    assert (
        kept["id"],
        kept["status"],
        kept["original_error"],
        kept["mirror_region_result_id"],
    ) == (row["id"], "failed", "provider 502", None)
    assert pairs(db, rid) == {("m2", "q1"): ("failed", "no result recorded", 1)}


def test_executions_mirror_detach_update_of_column_mirror_does_not_own_keeps_link(db):
    spec = small_spec(models=("m1",), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1", "running", completed_at=None)
    row = mirrored(db, rid)[0]
    db.execute(
        "UPDATE executions SET is_substantive = true, response_classification = "
        "'substantive', response_length = 42 WHERE id = %s",
        (row["id"],),
    )
    assert pairs(db, rid) == {("m1", "q1"): ("running", None, 3)}
    # Still mirrored: it follows the region, and keeps the columns the mirror does not own.
    record(db, rid, "m1", "q1", "completed")
    after = fetch(db, "SELECT * FROM executions WHERE id = %s", (row["id"],))[0]
    assert (
        after["status"],
        after["mirror_region_result_id"],
        after["is_substantive"],
        after["response_classification"],
        after["response_length"],
    ) == ("completed", rid, True, "substantive", 42)


def test_executions_mirror_detach_hand_fix_of_output_detaches(db):
    spec = small_spec(models=("m1",), questions=("q1",))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1")
    row = mirrored(db, rid)[0]
    db.execute(
        "UPDATE executions SET output_data = %s WHERE id = %s",
        (Jsonb({"response": "fixed by hand"}), row["id"]),
    )
    assert pairs(db, rid) == {}
    record(db, rid, "m1", "q1", output={"response": "writer again"})
    rows = job_rows(db, job_id)
    assert [
        (r["id"], r["output_data"], r["mirror_region_result_id"], r["mirror_evidence"])
        for r in rows
    ] == [(row["id"], {"response": "fixed by hand"}, None, 3)]


def test_executions_mirror_detach_key_change_leaves_old_key_to_the_mirror(db):
    """A hand fix moving a mirrored row to another key detaches it to the new key; the old
    key, owned by no direct row, goes back to the mirror (once it was left empty while the
    region result still counted as mirrored). Scenario: job with models [m1], questions
    [q1, q2]; writer start_region + record_pair (m1, q1) completed.
    UPDATE executions SET question_id = 'q3' WHERE job_id = J AND question_id = 'q1';
    -> row moved to (m1, q3), detached; no row at all for (m1, q1);
       SELECT mirrored FROM region_results_mirror_inputs -> true;
       SELECT * FROM region_results_mirror_apply(ARRAY[R]) -> inserted 1."""
    spec = small_spec(models=("m1",), questions=("q1", "q2"))
    job_id, _, rid = writer_region(db, spec)
    record(db, rid, "m1", "q1")
    moved = next(r for r in mirrored(db, rid) if r["question_id"] == "q1")
    db.execute("UPDATE executions SET question_id = 'q3' WHERE id = %s", (moved["id"],))
    rows = assert_one_row_per_key_of_job(db, job_id)
    assert next(r for r in rows if r["id"] == moved["id"])["mirror_region_result_id"] is None
    assert keys_of(rows) == [("US", "m1", "q1"), ("US", "m1", "q3")]
    assert pairs(db, rid) == {("m1", "q1"): ("completed", None, 3)}
    assert shown_pairs(db, rid) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m1", "q2"): ("running", None, 1),  # a placeholder, derived
    }


# --------------------------------------------------------------------------------------------
# Any writer, at any depth
# --------------------------------------------------------------------------------------------

MODELS = ("llama3.2-1b", "mistral-7b")


QUESTIONS = ("greatest_invention",)


def running_job(conn: psycopg.Connection[Any], jobspec_id: str) -> tuple[int, Any]:
    """A job whose US region runs, with both pairs recorded running (rows the mirror stores)
    and a third model's placeholder derived."""
    spec = seed.jobspec(
        jobspec_id, regions=["US"], models=[*MODELS, "qwen2.5-1.5b"], questions=list(QUESTIONS)
    )
    job = writer.create_job(conn, spec)
    run = writer.start_run(conn, jobspec_id, regions=["US"])
    region = writer.start_region(conn, run, "US", provider_id="modal-us-east")
    for model_id in MODELS:
        writer.record_pair(
            conn, region, model_id=model_id, question_id=QUESTIONS[0], status="running"
        )
    return job, region


def test_a_cancel_made_by_a_trigger_on_jobs_detaches_like_the_runners_own(db):
    """Reproduction (mirror v1 kept them linked): an AFTER UPDATE OF status ON jobs trigger
    cancels the job's pending/running executions rows. Cancelling the job cancels and detaches
    them: verify exits 0 and a backfill does not put them back to running; the derived
    placeholder shows cancelled too (the job is)."""
    db.execute(
        """
        CREATE FUNCTION cancel_executions() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE executions SET status = 'cancelled', completed_at = now()
            WHERE job_id = NEW.id AND status IN ('pending', 'running');
            RETURN NULL;
        END $$;
        CREATE TRIGGER cancel_on_job_cancel AFTER UPDATE OF status ON jobs
            FOR EACH ROW WHEN (NEW.status = 'cancelled')
            EXECUTE FUNCTION cancel_executions();
        """
    )
    job, region = running_job(db, "bias-detection-cancel-by-trigger")
    db.execute("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (job,))

    rows = fetch(db, "SELECT * FROM executions WHERE job_id = %s ORDER BY model_id", (job,))
    assert [(r["model_id"], r["status"], r["mirror_region_result_id"]) for r in rows] == [
        ("llama3.2-1b", "cancelled", None),
        ("mistral-7b", "cancelled", None),
    ]
    report = verify.verify(db)
    assert report.exit_code == 0, report.to_dict()
    assert backfill.backfill(db).changed == 0
    shown = fetch(
        db,
        "SELECT model_id, source, status FROM executions_unified WHERE job_id = %s "
        "ORDER BY model_id",
        (job,),
    )
    assert shown == [
        {"model_id": "llama3.2-1b", "source": "direct", "status": "cancelled"},
        {"model_id": "mistral-7b", "source": "direct", "status": "cancelled"},
        {"model_id": "qwen2.5-1.5b", "source": "derived", "status": "cancelled"},
    ]


def test_a_writer_role_s_temporary_trigger_cannot_hide_its_changes(db):
    """Reproduction: as the writer role, a temporary table whose pg_temp trigger function
    updates one mirrored row's output_data and deletes another. The first is detached (a
    direct row: the writer's write wins, and is shown as such, never as mirrored); the
    second's key is not lost: its region result is not mirrored, the view derives the row,
    verify reports it and a backfill restores it."""
    writer_role = f"bq_writer_depth_{db.info.backend_pid}"
    portal_role = f"bq_portal_depth_{db.info.backend_pid}"
    roles.grant(db, portal_role=portal_role, writer_role=writer_role)
    try:
        job, region = running_job(db, "bias-detection-temp-trigger")
        llama, mistral = (
            fetch(
                db,
                "SELECT id FROM executions WHERE job_id = %s AND model_id = %s",
                (job, model),
            )[0]["id"]
            for model in MODELS
        )
        db.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(writer_role)))
        db.execute(
            f"""
            CREATE TEMP TABLE poke (x int);
            CREATE FUNCTION pg_temp.forge() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE public.executions SET output_data = '{{"response": "forged"}}'
                WHERE id = {llama};
                DELETE FROM public.executions WHERE id = {mistral};
                RETURN NULL;
            END $$;
            CREATE TRIGGER forge AFTER INSERT ON poke
                FOR EACH ROW EXECUTE FUNCTION pg_temp.forge();
            INSERT INTO poke VALUES (1);
            """
        )
        db.execute("RESET ROLE")
        shown = fetch(
            db,
            "SELECT model_id, source, output_data FROM executions_unified "
            "WHERE job_id = %s AND model_id = ANY(%s) ORDER BY model_id",
            (job, list(MODELS)),
        )
        assert [(r["model_id"], r["source"]) for r in shown] == [
            ("llama3.2-1b", "direct"),
            ("mistral-7b", "derived"),
        ]
        assert shown[0]["output_data"] == {"response": "forged"}
        report = verify.verify(db)
        assert report.exit_code == 3
        assert {f.kind for f in report.drift} == {"not_mirrored", "missing"}
        repaired = backfill.backfill(db)
        assert (repaired.inserted, repaired.updated) == (1, 0)
        assert verify.verify(db).exit_code == 0
    finally:
        db.execute("RESET ROLE")
        for role in (writer_role, portal_role):
            db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
