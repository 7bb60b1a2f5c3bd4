"""The mirror's rule: what region_results_mirror_rows yields for a region result and its job,
seen through the rows materialised by the triggers and compared with the independent oracle
(SPEC "Words", "The mirror rule": the legacy format, models and questions, status, times,
over-long values; "Never fail the writer over data": the bad-data matrix and hostile JSON).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from factories import (
    FINISHED_AT,
    NAIVE_FINISH,
    NAIVE_START,
    element,
    job_and_run,
    make_direct_execution,
    make_job,
    make_region_result,
    make_run,
    small_spec,
    unique_jobspec_id,
)
from helpers import (
    NOTHING_APPLIED,
    T0,
    anomaly_kinds,
    apply,
    assert_no_constraint_violation,
    assert_one_row_per_key_of_job,
    executions_xmins,
    fetch,
    keys_of,
    mirrored,
    pairs,
    region_exists,
    scalar,
    sequence_state,
    shown_pairs,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import VOCAB, assert_exact, assert_matches_oracle
from psycopg.types.json import Jsonb

from beaconsql import portal, seed, verify

# Every status word the SPEC maps.
KNOWN_WORDS = list(VOCAB)

# --------------------------------------------------------------------------------------------
# The legacy format: the runner's own region rows
# --------------------------------------------------------------------------------------------


def test_region_results_mirror_legacy_worked_example_attributes_two_answers(db):
    spec = seed.jobspec(seed.LEGACY_JOBSPEC_ID)
    run = seed.record_legacy(db, spec)
    rows = assert_one_row_per_key_of_job(db, run.job_id)
    assert len(rows) == 18
    completed = [r for r in rows if r["status"] == "completed"]
    assert keys_of(completed) == [
        ("EU", "llama3.2-1b", "greatest_invention"),
        ("US", "llama3.2-1b", "greatest_invention"),
    ]
    for r in completed:
        assert r["mirror_evidence"] == 2
        assert r["output_data"] == seed.answer("llama3.2-1b", "greatest_invention", r["region"])
        assert r["receipt_data"] is None and r["original_error"] is None
    failed = [r for r in rows if r["status"] != "completed"]
    assert len(failed) == 16
    assert {(r["status"], r["original_error"], r["mirror_evidence"]) for r in failed} == {
        ("failed", "no result recorded", 1)
    }
    assert {r["output_data"] is None for r in failed} == {True}
    # Times: the region's, naive UTC; US started 17:00, EU one minute later, 45 s each.
    us = next(r for r in rows if r["region"] == "US")
    eu = next(r for r in rows if r["region"] == "EU")
    assert (us["started_at"], us["completed_at"], us["created_at"]) == (
        NAIVE_START,
        NAIVE_START + timedelta(seconds=45),
        NAIVE_START,
    )
    assert eu["started_at"] == NAIVE_START + timedelta(minutes=1)
    assert {r["provider_id"] for r in rows if r["region"] == "EU"} == {"modal-eu-west"}
    assert {r["cross_region_execution_id"] for r in rows} == {run.run_id}
    for rid in run.region_result_ids.values():
        assert anomaly_kinds(db, rid) == []


@pytest.mark.parametrize(
    ("data_model", "expected_model"),
    [("mistral-7b", "mistral-7b"), ("gpt-4o", "llama3.2-1b"), (None, "llama3.2-1b")],
)
def test_region_results_mirror_legacy_answer_model_from_data_metadata(
    db, data_model, expected_model
):
    job, run = job_and_run(db, spec=seed.jobspec(unique_jobspec_id(), regions=["US"]))
    data: dict[str, Any] = {"response": "the one answer"}
    if data_model is not None:
        data["metadata"] = {"model": data_model}
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        status="success",
        completed_at=FINISHED_AT,
        error_message="",
        execution_output={"data": data, "hash": ""},
    )
    got = pairs(db, rr["id"])
    assert len(got) == 9
    assert {k: v for k, v in got.items() if v[0] == "completed"} == {
        (expected_model, "greatest_invention"): ("completed", None, 2)
    }
    answer_row = next(r for r in mirrored(db, rr["id"]) if r["status"] == "completed")
    assert answer_row["output_data"] == data
    assert anomaly_kinds(db, rr["id"]) == []


def test_region_results_mirror_legacy_failed_region_carries_error_message(db):
    job, run = job_and_run(db, spec=seed.jobspec(unique_jobspec_id(), regions=["US"]))
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        status="failed",
        completed_at=FINISHED_AT,
        execution_output=None,
        error_message="all executions failed",
        metadata={
            "success_count": 0,
            "failure_count": 9,
            "total_executions": 9,
            "plan_priority": 0,
        },
    )
    got = pairs(db, rr["id"])
    assert len(got) == 9
    assert set(got.values()) == {("failed", "all executions failed", 1)}
    assert {(r["completed_at"], r["output_data"]) for r in mirrored(db, rr["id"])} == {
        (NAIVE_FINISH, None)
    }


def test_region_results_mirror_legacy_cancelled_region_yields_cancelled_pairs(db):
    job, run = job_and_run(db, spec=seed.jobspec(unique_jobspec_id(), regions=["US"]))
    rr = make_region_result(
        db,
        cross_region_execution_id=run["id"],
        status="cancelled",
        completed_at=FINISHED_AT,
        error_message="",
        execution_output={
            "data": seed.answer("llama3.2-1b", "greatest_invention", "US"),
            "hash": "",
        },
    )
    got = pairs(db, rr["id"])
    assert got.pop(("llama3.2-1b", "greatest_invention")) == ("completed", None, 2)
    assert len(got) == 8
    assert set(got.values()) == {("cancelled", "no result recorded", 1)}


def test_region_results_mirror_running_region_yields_running_pairs_without_completed_at(db):
    job, run = job_and_run(db, models=("m1", "m2"), questions=("q1", "q2"))
    rr = make_region_result(db, cross_region_execution_id=run["id"], status="running")
    assert mirrored(db, rr["id"]) == []  # placeholders: derived by the view, never stored
    rows = fetch(db, "SELECT * FROM executions_unified WHERE region_result_id = %s", (rr["id"],))
    assert len(rows) == 4
    assert {
        (r["source"], r["status"], r["completed_at"], r["original_error"], r["evidence"])
        for r in rows
    } == {("derived", "running", None, None, 1)}
    db.execute("UPDATE region_results SET status = 'QUEUED' WHERE id = %s", (rr["id"],))
    assert {v[0] for v in shown_pairs(db, rr["id"]).values()} == {"pending"}


# --------------------------------------------------------------------------------------------
# Never fail the writer over data: the bad-data matrix
# --------------------------------------------------------------------------------------------


def finished_region(
    conn: psycopg.Connection[Any], run: dict[str, Any], elements: Any = None, **overrides: Any
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "cross_region_execution_id": run["id"],
        "status": "success",
        "completed_at": FINISHED_AT,
        "error_message": "",
    }
    if elements is not None:
        values["execution_output"] = {"executions": elements}
    values.update(overrides)
    rr = make_region_result(conn, **values)
    assert region_exists(conn, rr["id"])  # the write committed
    return rr


def test_region_results_mirror_bad_data_missing_job(db):
    run = make_run(db)  # no jobs row for its jobspec_id
    rr = finished_region(db, run, [element("mistral-7b", "q1")])
    rows = mirrored(db, rr["id"])
    assert {r["job_id"] for r in rows} == {None}
    assert pairs(db, rr["id"]) == {
        ("llama3.2-1b", "default"): ("failed", "no result recorded", 1),  # R.model_id, default
        ("mistral-7b", "q1"): ("completed", None, 3),
    }
    assert anomaly_kinds(db, rr["id"]) == ["missing_job"]
    # models fall back to R.model_id when the region has one of its own.
    rr2 = finished_region(db, make_run(db), [], model_id="qwen2.5-1.5b")
    assert pairs(db, rr2["id"]) == {
        ("qwen2.5-1.5b", "default"): ("failed", "no result recorded", 1)
    }
    assert anomaly_kinds(db, rr2["id"]) == ["missing_job"]


def test_region_results_mirror_bad_data_models_is_a_string(db):
    spec = small_spec(models="mistral-7b,qwen2.5-1.5b", questions=("q1",))
    spec["metadata"]["model"] = "qwen2.5-1.5b"
    job, run = job_and_run(db, spec=spec)
    rr = finished_region(db, run, [])
    assert pairs(db, rr["id"]) == {("qwen2.5-1.5b", "q1"): ("failed", "no result recorded", 1)}
    assert anomaly_kinds(db, rr["id"]) == ["malformed_models"]


def test_region_results_mirror_bad_data_models_array_of_unusable_entries(db):
    spec = small_spec(models=[None, "", 7, {"id": ""}, {"label": "x"}, ["m"]], questions=("q1",))
    del spec["metadata"]["model"]
    job, run = job_and_run(db, spec=spec)
    rr = finished_region(db, run, [])
    # No usable id, no metadata.model: R.model_id (the runner's default llama3.2-1b).
    assert pairs(db, rr["id"]) == {("llama3.2-1b", "q1"): ("failed", "no result recorded", 1)}
    assert anomaly_kinds(db, rr["id"]) == ["malformed_models"] * 6


def test_region_results_mirror_models_objects_and_duplicates(db):
    spec = small_spec(
        models=[{"id": "a", "name": "A"}, {"model_id": "b"}, {"name": "c"}, "a", {"id": "b"}, ""],
        questions=["q1", {"id": "q2"}, "q1"],
    )
    job, run = job_and_run(db, spec=spec)
    rr = finished_region(db, run, [])
    assert list(pairs(db, rr["id"])) == [
        ("a", "q1"),
        ("a", "q2"),
        ("b", "q1"),
        ("b", "q2"),
        ("c", "q1"),
        ("c", "q2"),
    ]
    assert anomaly_kinds(db, rr["id"]) == ["malformed_models"]  # the "" entry


def test_region_results_mirror_models_fall_back_to_metadata_model(db):
    spec = small_spec(models=[], questions=("q1",))
    spec["metadata"]["model"] = "mistral-7b"
    job, run = job_and_run(db, spec=spec)
    rr = finished_region(db, run, [])
    assert pairs(db, rr["id"]) == {("mistral-7b", "q1"): ("failed", "no result recorded", 1)}
    assert anomaly_kinds(db, rr["id"]) == []


def test_region_results_mirror_bad_data_questions_is_an_object(db):
    spec = small_spec(models=("m1",), questions={"q1": "What is 2+2?"})
    job, run = job_and_run(db, spec=spec)
    rr = finished_region(db, run, [element("m1", "q1")])
    assert pairs(db, rr["id"]) == {
        ("m1", "default"): ("failed", "no result recorded", 1),
        ("m1", "q1"): ("completed", None, 3),
    }
    assert anomaly_kinds(db, rr["id"]) == ["malformed_questions"]


@pytest.mark.parametrize(
    ("completed_at", "expected_status", "expected_error", "expected_completed_at"),
    [(FINISHED_AT, "failed", "region exploded", NAIVE_FINISH), (None, "pending", None, None)],
)
def test_region_results_mirror_bad_data_unknown_region_status(
    db, completed_at, expected_status, expected_error, expected_completed_at
):
    job, run = job_and_run(db, models=("m1", "m2"), questions=("q1",))
    rr = finished_region(
        db,
        run,
        [element("m1", "q1", completed_at=None)],
        status="Exploded",
        completed_at=completed_at,
        error_message="region exploded",
    )
    got = shown_pairs(db, rr["id"])
    assert got == {
        ("m1", "q1"): ("completed", None, 3),
        ("m2", "q1"): (expected_status, expected_error, 1),
    }
    [m2] = fetch(
        db,
        "SELECT completed_at FROM executions_unified WHERE region_result_id = %s "
        "AND model_id = 'm2'",
        (rr["id"],),
    )
    assert m2["completed_at"] == (
        expected_completed_at and expected_completed_at.replace(tzinfo=UTC)
    )
    assert anomaly_kinds(db, rr["id"]) == ["unknown_status"]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("success", "completed"),
        ("SUCCEEDED", "completed"),
        (" Done ", "completed"),
        ("finished", "completed"),
        ("Error", "failed"),
        ("timeout", "failed"),
        ("processing", "running"),
        ("RETRYING", "running"),
        ("queued", "pending"),
        ("Canceled", "cancelled"),
    ],
)
def test_region_results_mirror_region_status_vocabulary(db, word, expected):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    finished = expected in ("completed", "failed", "cancelled")
    rr = finished_region(db, run, [], status=word, completed_at=FINISHED_AT if finished else None)
    status = {"completed": "failed"}.get(expected, expected)  # no result for the pair
    assert [v[0] for v in shown_pairs(db, rr["id"]).values()] == [status]
    assert len(mirrored(db, rr["id"])) == (1 if finished else 0)  # a placeholder is derived
    assert anomaly_kinds(db, rr["id"]) == []


def test_region_results_mirror_region_status_trimmed_of_any_whitespace(db):
    """Status words are matched after trimming any whitespace (tabs, newlines), not only
    spaces."""
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(db, run, [element("m1", "q1", "\tCompleted\n")], status="\tsuccess\n")
    assert pairs(db, rr["id"]) == {("m1", "q1"): ("completed", None, 3)}
    assert anomaly_kinds(db, rr["id"]) == []


def test_region_results_mirror_unknown_element_status_uses_region_completed_at(db):
    """An element's unknown status maps to failed when R (or the element) has a completed_at
    (SPEC, Status): on a finished region the element keeps its own error, and the only anomaly
    is the unknown status (not 'no result recorded' / unfinished_element)."""
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(
        db, run, [{"model_id": "m1", "question_id": "q1", "status": "crashed", "error": "OOM"}]
    )
    assert pairs(db, rr["id"]) == {("m1", "q1"): ("failed", "OOM", 3)}
    assert anomaly_kinds(db, rr["id"]) == ["unknown_status"]


def test_region_results_mirror_bad_data_unknown_element_status(db):
    job, run = job_and_run(db, models=("m1", "m2"), questions=("q1",))
    rr = finished_region(
        db,
        run,
        [
            element("m1", "q1", "weird"),  # has completed_at: failed
            element("m2", "q1", None, completed_at=None, output=None),  # NULL status: pending
        ],
        status="running",
        completed_at=None,
    )
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("failed", None, 3),
        ("m2", "q1"): ("pending", None, 3),
    }
    assert anomaly_kinds(db, rr["id"]) == ["unknown_status"]


def test_region_results_mirror_bad_data_element_not_an_object(db):
    job, run = job_and_run(db, models=("m1", "m2"), questions=("q1",))
    rr = finished_region(db, run, ["m2/q1 completed", 42, None, element("m1", "q1")])
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m2", "q1"): ("failed", "no result recorded", 1),
    }
    assert anomaly_kinds(db, rr["id"]) == ["invalid_element"] * 3


def test_region_results_mirror_bad_data_element_lacking_model_id(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1", "q2"))
    no_model = element("m1", "q2")
    del no_model["model_id"]
    rr = finished_region(
        db, run, [no_model, element("", "q2"), element("m1", 5), element("m1", "q1")]
    )
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("completed", None, 3),
        ("m1", "q2"): ("failed", "no result recorded", 1),
    }
    assert anomaly_kinds(db, rr["id"]) == ["invalid_element"] * 3


def test_region_results_mirror_bad_data_malformed_executions(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(
        db,
        run,
        None,
        execution_output={
            "executions": {"m1": "done"},
            "data": {"response": "legacy answer"},
            "hash": "",
        },
    )
    # Not an array: the legacy single answer still counts.
    assert pairs(db, rr["id"]) == {("m1", "q1"): ("completed", None, 2)}
    assert anomaly_kinds(db, rr["id"]) == ["malformed_executions"]


@pytest.mark.parametrize(
    ("model_id", "question_id", "mirrored_pair"),
    [
        ("m" * 51, "q1", False),
        ("x" * 50, "q1", True),
        ("m1", "q" * 256, False),
        ("m1", "q" * 255, True),
    ],
)
def test_region_results_mirror_bad_data_over_long_ids(db, model_id, question_id, mirrored_pair):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(db, run, [element(model_id, question_id), element("m1", "q1")])
    expected = {("m1", "q1"): ("completed", None, 3)}
    if mirrored_pair:
        expected[(model_id, question_id)] = ("completed", None, 3)
    assert pairs(db, rr["id"]) == expected
    assert anomaly_kinds(db, rr["id"]) == ([] if mirrored_pair else ["id_too_long"])


def test_region_results_mirror_bad_data_over_long_model_in_spec(db):
    spec = small_spec(models=("m1", "m" * 51), questions=("q1",))
    job, run = job_and_run(db, spec=spec)
    rr = finished_region(db, run, [])
    assert pairs(db, rr["id"]) == {("m1", "q1"): ("failed", "no result recorded", 1)}
    assert anomaly_kinds(db, rr["id"]) == ["id_too_long"]


@pytest.mark.parametrize(
    "bad_time",
    [
        "yesterday",
        "2025-02-30T10:00:00Z",
        "",
        1760288315,
        "2025-10-12T25:00:00Z",
        "0000-01-01T00:00:00Z",
    ],
)
def test_region_results_mirror_bad_data_unparsable_element_time(db, bad_time):
    db.execute("SET TimeZone = 'Asia/Tokyo'")
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(
        db, run, [element("m1", "q1", started_at=bad_time, completed_at="2025-10-12T17:00:09Z")]
    )
    row = mirrored(db, rr["id"])[0]
    assert (row["status"], row["started_at"], row["created_at"], row["completed_at"]) == (
        "completed",
        NAIVE_START,
        NAIVE_START,
        NAIVE_START + timedelta(seconds=9),
    )
    assert anomaly_kinds(db, rr["id"]) == ["invalid_time"]


def test_region_results_mirror_bad_data_unparsable_completed_at_falls_back_to_region(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(db, run, [element("m1", "q1", completed_at="2025-02-29T10:00:00Z")])
    row = mirrored(db, rr["id"])[0]
    assert (row["status"], row["completed_at"]) == ("completed", NAIVE_FINISH)
    assert anomaly_kinds(db, rr["id"]) == ["invalid_time"]


@pytest.mark.parametrize(
    ("started", "expected"),
    [
        ("2025-03-01T10:00:00", datetime(2025, 3, 1, 10, 0)),
        ("2025-03-01 10:00:00.250", datetime(2025, 3, 1, 10, 0, 0, 250000)),
        ("2025-03-01", datetime(2025, 3, 1)),
        ("2025-03-01T10:00:00+05:30", datetime(2025, 3, 1, 4, 30)),
        ("2025-03-01T10:00:00-0800", datetime(2025, 3, 1, 18, 0)),
        ("2024-02-29T23:59:59z", datetime(2024, 2, 29, 23, 59, 59)),
    ],
)
def test_region_results_mirror_element_time_without_zone_is_utc(db, started, expected):
    db.execute("SET TimeZone = 'America/New_York'")
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(
        db, run, [element("m1", "q1", started_at=started, completed_at="2025-03-02T00:00:00Z")]
    )
    row = mirrored(db, rr["id"])[0]
    assert (row["started_at"], row["created_at"], row["completed_at"]) == (
        expected,
        expected,
        datetime(2025, 3, 2),
    )
    assert anomaly_kinds(db, rr["id"]) == []


def test_region_results_mirror_bad_data_running_element_on_finished_region(db):
    job, run = job_and_run(db, models=("m1", "m2"), questions=("q1",))
    rr = finished_region(
        db,
        run,
        [
            element("m1", "q1", "running", completed_at=None, output=None),
            element("m2", "q1", "pending", completed_at=None, output=None),
        ],
        error_message="region error text",
    )
    assert pairs(db, rr["id"]) == {
        ("m1", "q1"): ("failed", "no result recorded", 3),
        ("m2", "q1"): ("failed", "no result recorded", 3),
    }
    assert {r["completed_at"] for r in mirrored(db, rr["id"])} == {NAIVE_FINISH}
    assert anomaly_kinds(db, rr["id"]) == ["unfinished_element"] * 2


def test_region_results_mirror_repeated_pair_last_element_wins(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(
        db,
        run,
        [
            element("m1", "q1", "failed", error="first try"),
            element("m1", "q1", "completed", output={"response": "second try"}),
        ],
    )
    rows = mirrored(db, rr["id"])
    assert [(r["status"], r["original_error"], r["output_data"]) for r in rows] == [
        ("completed", None, {"response": "second try"})
    ]
    assert rows[0]["receipt_data"] == {"id": "receipt-m1-q1"}
    assert anomaly_kinds(db, rr["id"]) == []


def test_region_results_mirror_provider_id_null_becomes_empty_string(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(db, run, [element("m1", "q1")], provider_id=None)
    assert [r["provider_id"] for r in mirrored(db, rr["id"])] == [""]


def test_region_results_mirror_columns_it_does_not_own_keep_defaults(db):
    job, run = job_and_run(db, models=("m1",), questions=("q1",))
    rr = finished_region(db, run, [element("m1", "q1")])
    row = mirrored(db, rr["id"])[0]
    assert (
        row["is_substantive"],
        row["is_content_refusal"],
        row["is_technical_error"],
        row["response_classification"],
        row["response_length"],
        row["system_prompt"],
        row["retry_count"],
        row["max_retries"],
        row["last_retry_at"],
        row["retry_history"],
        row["ipfs_cid"],
        row["ipfs_pinned_at"],
    ) == (False, False, False, "unknown", 0, None, 0, 3, None, [], None, None)


# --------------------------------------------------------------------------------------------
# Property: whatever is written, the materialised rows are the rule's rows
# --------------------------------------------------------------------------------------------

MODEL_POOL = ["m1", "m2", "m3"]
QUESTION_POOL = ["q1", "q2"]


@st.composite
def status_words(draw: st.DrawFn, allow_null: bool) -> str | None:
    choice = draw(
        st.sampled_from(["known", "case", "space", "unknown"] + (["null"] if allow_null else []))
    )
    if choice == "null":
        return None
    word = draw(st.sampled_from(KNOWN_WORDS))
    if choice == "case":
        return "".join(c.upper() if draw(st.booleans()) else c for c in word)
    if choice == "space":
        before = draw(st.sampled_from([" ", "  ", "\t", "\n"]))
        return before + word + draw(st.sampled_from(["", " ", "\t"]))
    if choice == "unknown":
        return draw(st.sampled_from(["exploded", "", "SUCCESSFUL", "ok", "partial", "42"]))
    return word


time_values = st.one_of(
    st.just("absent"),
    st.none(),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)).map(
        lambda d: d.isoformat()
    ),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)).map(
        lambda d: d.replace(microsecond=0).isoformat() + "Z"
    ),
    st.datetimes(
        min_value=datetime(2020, 1, 1),
        max_value=datetime(2030, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
        ),
    ).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "yesterday",
            "2025-02-30T10:00:00Z",
            "",
            "2025-13-01",
            "2025-10-12 17:00",
            "2025-10-12T17:00:00+05",
            "0000-01-01",
            "2025-10-12T24:00:00Z",
            17,
            True,
        ]
    ),
)


@st.composite
def elements_of(draw: st.DrawFn) -> Any:
    out: list[Any] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["pair"] * 6 + ["garbage", "no_model", "long", "wrapped"]))
        if kind == "garbage":
            out.append(draw(st.sampled_from(["x", 1, None, [], {"a": 1}])))
            continue
        el: dict[str, Any] = {
            "model_id": draw(st.sampled_from(MODEL_POOL + ["m9"])),
            "question_id": draw(st.sampled_from(QUESTION_POOL + ["q9"])),
            "status": draw(status_words(allow_null=True)),
            "output": draw(st.sampled_from([None, {"response": "r1"}, {"response": "r2"}])),
            "receipt": draw(st.sampled_from([None, {"id": "receipt-1"}])),
            "error": draw(st.sampled_from([None, "", "boom"])),
        }
        for field in ("started_at", "completed_at"):
            value = draw(time_values)
            if value != "absent":
                el[field] = value
        if kind == "no_model":
            el.pop("model_id")
        if kind == "long":
            el["model_id"] = "m" * 51
        # An element that is an array holding a usable element: not an object, skipped.
        out.append([el] if kind == "wrapped" else el)
    return out


@st.composite
def execution_outputs(draw: st.DrawFn) -> Any:
    shape = draw(st.sampled_from(["null", "elements", "elements+data", "legacy", "bad", "nodata"]))
    data = {"response": "legacy", "metadata": {"model": draw(st.sampled_from(MODEL_POOL + ["zz"]))}}
    if shape == "null":
        return None
    if shape == "elements":
        return {"executions": draw(elements_of())}
    if shape == "elements+data":
        return {"executions": draw(elements_of()), "data": data, "hash": ""}
    if shape == "legacy":
        return {"data": data, "hash": ""}
    if shape == "bad":
        return {"executions": draw(st.sampled_from([{"m1": 1}, "x", 3])), "data": data}
    return {"data": None, "hash": ""}


@st.composite
def region_states(draw: st.DrawFn) -> dict[str, Any]:
    return {
        # region_results.status is NOT NULL (the runner's schema): NULL statuses are drawn for
        # the elements only.
        "status": draw(status_words(allow_null=False)),
        "completed_at": draw(st.sampled_from([None, FINISHED_AT])),
        "error_message": draw(st.sampled_from([None, "", "all executions failed"])),
        "execution_output": draw(execution_outputs()),
        "model_id": draw(st.sampled_from(["llama3.2-1b", None, ""])),
    }


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.integers(0, 9)) == 0:
        return None  # no jobs row
    spec = seed.jobspec(unique_jobspec_id(), regions=["US"], models=["m1"], questions=["q1"])
    model_entry = st.one_of(
        st.sampled_from(MODEL_POOL),
        st.sampled_from(MODEL_POOL).map(lambda m: {"id": m}),
        st.sampled_from(MODEL_POOL).map(lambda m: {"name": m}),
        st.sampled_from([None, "", 5, {"x": 1}, "m" * 51]),
    )
    spec["metadata"]["models"] = draw(
        st.one_of(
            st.lists(model_entry, max_size=4), st.just("m1,m2"), st.just({"m1": True}), st.none()
        )
    )
    spec["metadata"]["model"] = draw(st.sampled_from(["m2", "", None, 3]))
    question_entry = st.one_of(
        st.sampled_from(QUESTION_POOL),
        st.sampled_from(QUESTION_POOL).map(lambda q: {"id": q}),
        st.sampled_from([None, "", 1]),
    )
    spec["questions"] = draw(
        st.one_of(st.lists(question_entry, max_size=3), st.just({"q1": "?"}), st.none())
    )
    return spec


# The rule's property tests: 60 drawn cases each, on the test's own database.
property_settings = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def drawn_region_result(
    db: psycopg.Connection[Any], spec: dict[str, Any] | None, region: dict[str, Any]
) -> dict[str, Any]:
    """A region result of *region*'s fields, in a run of *spec*'s job (None: no jobs row)."""
    if spec is not None:
        make_job(db, jobspec_id=spec["id"], jobspec_data=spec)
        run = make_run(db, jobspec_id=spec["id"])
    else:
        run = make_run(db)
    return make_region_result(db, cross_region_execution_id=run["id"], **region)


@property_settings
@given(
    spec=specs(),
    first=region_states(),
    second=region_states(),
    second_kind=st.sampled_from(["replace", "append", "noop"]),
    extra=elements_of(),
)
def test_region_results_mirror_property_materialised_rows_equal_the_rule(
    db, spec, first, second, second_kind, extra
):
    rr = drawn_region_result(db, spec, first)
    if second_kind == "replace":
        db.execute(
            "UPDATE region_results SET status = %s, completed_at = %s, error_message = %s, "
            "execution_output = %s, model_id = %s WHERE id = %s",
            (
                second["status"],
                second["completed_at"],
                second["error_message"],
                Jsonb(second["execution_output"])
                if second["execution_output"] is not None
                else None,
                second["model_id"],
                rr["id"],
            ),
        )
    elif second_kind == "append":
        db.execute(
            "UPDATE region_results SET execution_output = CASE "
            "WHEN jsonb_typeof(execution_output -> 'executions') = 'array' THEN jsonb_set("
            "execution_output, '{executions}', (execution_output -> 'executions') || %s) "
            "ELSE execution_output END WHERE id = %s",
            (Jsonb(extra[:1]), rr["id"]),
        )
    else:
        db.execute("UPDATE region_results SET metadata = metadata WHERE id = %s", (rr["id"],))

    assert db.execute(
        "SELECT count(*) FROM executions WHERE status IS NULL OR status NOT IN "
        "('pending', 'running', 'completed', 'failed', 'cancelled')"
    ).fetchone() == (0,)
    assert_matches_oracle(db, [rr["id"]])
    # Every anomaly the rule reports for the current data has been recorded.
    recorded = set(
        db.execute(
            "SELECT kind, detail FROM region_results_mirror_anomalies WHERE region_result_id = %s",
            (rr["id"],),
        ).fetchall()
    )
    current = set(
        db.execute(
            "SELECT f.anomaly_kind, f.anomaly_detail FROM region_results_mirror_inputs i, "
            "LATERAL region_results_mirror_rows(i.region_result, i.job_id, i.jobspec_data, "
            "i.job_status) f "
            "WHERE i.region_result_id = %s AND f.anomaly_kind IS NOT NULL",
            (rr["id"],),
        ).fetchall()
    )
    assert current <= recorded

    seq, xmins = sequence_state(db), executions_xmins(db)
    counts = apply(db, rr["id"])
    assert counts == NOTHING_APPLIED
    assert sequence_state(db) == seq
    assert executions_xmins(db) == xmins


# The rule's rows of some pairs, asked with the region result whole or narrowed to their
# elements (region_results_mirror_narrow): compared as text, sorted.
RULE_OF_PAIRS = """
SELECT f.mirror_row::text, f.stored, f.anomaly_kind::text, f.anomaly_detail
FROM region_results_mirror_inputs i,
     LATERAL region_results_mirror_rows(
         CASE WHEN %(narrowed)s THEN region_results_mirror_narrow(i.region_result, %(pairs)s)
              ELSE i.region_result END,
         i.job_id, i.jobspec_data, i.job_status, %(pairs)s) f
WHERE i.region_result_id = %(id)s
ORDER BY 1, 2, 3, 4
"""


def assert_narrowing_keeps_the_rows(
    db: psycopg.Connection[Any], region_result_id: uuid.UUID, pairs: list[str | None]
) -> None:
    whole, narrowed = (
        db.execute(
            RULE_OF_PAIRS, {"narrowed": narrowed, "pairs": pairs, "id": region_result_id}
        ).fetchall()
        for narrowed in (False, True)
    )
    assert narrowed == whole


@property_settings
@given(
    spec=specs(),
    region=region_states(),
    asked=st.lists(
        st.tuples(
            st.sampled_from(MODEL_POOL + ["m9", "m" * 51, ""]),
            st.sampled_from(QUESTION_POOL + ["q9"]),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_region_results_mirror_rows_of_some_pairs_are_those_of_their_elements(
    db, spec, region, asked
):
    rr = drawn_region_result(db, spec, region)
    assert_narrowing_keeps_the_rows(db, rr["id"], [json.dumps([m, q]) for m, q in asked])


PAIR_A = element("m1", "q1", output={"response": "A"})
PAIR_B = element("m1", "q1", output={"response": "B"})


@pytest.mark.parametrize(
    "elements, completed_at",
    [
        # an array among the elements, holding an element of the pair: skipped by the rule
        ([PAIR_A, [PAIR_B]], None),
        ([[PAIR_B]], FINISHED_AT),
        ([PAIR_A, [element("m2", "q1"), PAIR_B]], None),
        # ids that are arrays or numbers
        ([PAIR_A, {**PAIR_B, "model_id": ["m1"]}], None),
        ([PAIR_A, {**PAIR_B, "question_id": 1}], None),
    ],
)
@pytest.mark.parametrize("asked", [['["m1", "q1"]'], ['["m1", "q1"]', None]])
def test_region_results_mirror_narrow_leaves_what_the_rule_skips(db, elements, completed_at, asked):
    rr = drawn_region_result(
        db,
        small_spec(models=("m1",), questions=("q1",)),
        {
            "execution_output": {"executions": elements},
            "status": "success" if completed_at else "running",
            "completed_at": completed_at,
        },
    )
    assert_narrowing_keeps_the_rows(db, rr["id"], asked)


# --------------------------------------------------------------------------------------------
# Hostile JSON: every runner write commits; the rows are the rule's
# --------------------------------------------------------------------------------------------

HOSTILE_MODELS = ["m1", "m2", "ジョブ-🚀", "m" * 50, "🚀" * 50]
HOSTILE_QUESTIONS = ["q1", "q2", "q" * 255, "é" * 255, "what's up? %s :name $1"]
TOO_LONG = ["m" * 51, "🚀" * 51, "x" * 10240, "q" * 256]
CONTROL = "".join(chr(c) for c in range(1, 32)) + "\x7f\x85\u2028\u2029\u202e\ufeff"
# Any character PostgreSQL can hold in text and jsonb (no NUL, no lone surrogate).
chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
short_text = st.text(chars, max_size=12)
hostile_text = st.one_of(
    short_text,
    st.text(st.sampled_from(CONTROL), min_size=1, max_size=8),
    st.sampled_from(
        [
            "",
            " ",
            "null",
            "'; DROP TABLE jobs; --",
            "%s %(x)s :name $1",
            "\\",
            '"',
            "x" * 10240,
            "é" * 10240,
            "🚀" * 2600,
            "\x01\x1f" * 5120,
        ]
    ),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)


def nest(value: Any, depth: int, as_object: bool) -> Any:
    for _ in range(depth):
        value = {"a": value} if as_object else [value]
    return value


deep_values = st.builds(nest, json_scalars, st.sampled_from([30, 200]), st.booleans())
hostile_json = st.one_of(
    st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short_text, inner, max_size=4),
        max_leaves=10,
    ),
    deep_values,
)
model_ids = st.one_of(
    st.sampled_from(HOSTILE_MODELS),
    st.sampled_from(HOSTILE_MODELS),
    st.sampled_from(TOO_LONG),
    hostile_json,
)
question_ids = st.one_of(
    st.sampled_from(HOSTILE_QUESTIONS),
    st.sampled_from(HOSTILE_QUESTIONS),
    st.sampled_from(TOO_LONG),
    hostile_json,
)


@st.composite
def hostile_status_words(draw: st.DrawFn, max_size: int | None = None) -> str:
    """A status as the runner might write it: a known word in any case with whitespace around
    (ASCII or not), or any text."""
    kind = draw(st.sampled_from(["word", "word", "mangled", "text"]))
    if kind == "text":
        word = draw(st.one_of(short_text, st.text(st.sampled_from(CONTROL), max_size=6)))
    else:
        word = draw(st.sampled_from(KNOWN_WORDS))
        if kind == "mangled":
            word = "".join(c.upper() if draw(st.booleans()) else c for c in word)
            pad = st.sampled_from(["", " ", "\t", "\n", "\r\n", "\u00a0", "\x1f", "\u3000"])
            word = draw(pad) + word + draw(pad)
    return word[:max_size] if max_size else word


hostile_times = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.isoformat()
    ),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)).map(
        lambda d: d.isoformat() + "Z"
    ),
    st.sampled_from(
        [
            "infinity",
            "-infinity",
            "now",
            "today",
            "epoch",
            "allballs",
            "2025-02-29T10:00:00Z",
            "2024-02-29T10:00:00Z",
            "2025-10-12T24:00:00Z",
            "2025-10-12T23:59:60Z",
            "9999-12-31T23:59:59-15:59",
            "0001-01-01T00:00:00+15:59",
            "0000-01-01T00:00:00Z",
            "2025-10-12T17:00:00.123456789123Z",
            "2025-10-12t17:00:00z",
            "2025-10-12 17:00",
            "20251012T170000Z",
            "2025-10-12T17:00:00+99:99",
            "１２３４-01-01",
        ]
    ),
    hostile_json,
)


@st.composite
def hostile_elements(draw: st.DrawFn) -> Any:
    """One element of execution_output.executions: usually an object with the writer's keys,
    each absent, null, of the wrong type or hostile; sometimes any JSON at all."""
    if draw(st.integers(0, 5)) == 0:
        return draw(hostile_json)
    element: dict[str, Any] = {}
    for key, strategy in (
        ("model_id", model_ids),
        ("question_id", question_ids),
        ("status", st.one_of(hostile_status_words(), hostile_json)),
        ("started_at", hostile_times),
        ("completed_at", hostile_times),
        ("output", hostile_json),
        ("receipt", hostile_json),
        ("error", hostile_json),
    ):
        if draw(st.integers(0, 9)) > 0:
            element[key] = draw(strategy)
    return element


hostile_execution_outputs = st.one_of(
    st.none(),
    hostile_json,
    st.builds(lambda els: {"executions": els}, st.lists(hostile_elements(), max_size=6)),
    st.builds(lambda v: {"executions": v}, hostile_json),
    st.builds(lambda d: {"data": d, "hash": ""}, hostile_json),
    st.builds(
        lambda els, d: {"executions": els, "data": d, "hash": ""},
        st.lists(hostile_elements(), max_size=4),
        hostile_json,
    ),
)


@st.composite
def hostile_job_specs(draw: st.DrawFn) -> Any:
    """jobspec_data: the portal's spec with metadata.models, metadata.model and questions of
    any shape, or any JSON at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(hostile_json)
    spec = seed.jobspec("placeholder", regions=["US"], models=["m1"], questions=["q1"])
    model_entry = st.one_of(
        model_ids,
        st.builds(lambda v: {"id": v}, model_ids),
        st.builds(lambda v: {"model_id": v}, model_ids),
        st.builds(lambda v: {"name": v}, model_ids),
    )
    question_entry = st.one_of(question_ids, st.builds(lambda v: {"id": v}, question_ids))
    spec["metadata"]["models"] = draw(st.one_of(st.lists(model_entry, max_size=5), hostile_json))
    spec["metadata"]["model"] = draw(model_ids)
    spec["questions"] = draw(st.one_of(st.lists(question_entry, max_size=5), hostile_json))
    if draw(st.integers(0, 9)) == 0:
        spec["metadata"] = draw(hostile_json)
    return spec


@st.composite
def hostile_region_states(draw: st.DrawFn) -> dict[str, Any]:
    """The columns of a region_results write (within the runner's column sizes)."""
    return {
        "status": draw(hostile_status_words(max_size=50)),
        "completed_at": draw(st.sampled_from([None, T0 + timedelta(minutes=1)])),
        "error_message": draw(st.one_of(st.none(), hostile_text)),
        "execution_output": draw(hostile_execution_outputs),
        "model_id": draw(st.one_of(st.none(), st.just(""), st.sampled_from(HOSTILE_MODELS))),
    }


runner_steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), hostile_elements()),
        st.tuples(st.just("replace"), hostile_region_states()),
        st.tuples(st.just("respec"), hostile_job_specs()),
        st.tuples(
            st.just("direct"),
            st.tuples(st.sampled_from(HOSTILE_MODELS), st.sampled_from(HOSTILE_QUESTIONS + [""])),
        ),
        st.tuples(st.just("undirect"), st.none()),
        st.tuples(st.just("delete"), st.none()),
    ),
    min_size=1,
    max_size=4,
)


def runner_json(value: Any) -> Jsonb:
    """A jsonb parameter for any JSON value (JSON null included, as 'null'::jsonb)."""
    return Jsonb(value)


def runner_writes(
    conn: psycopg.Connection[Any], spec: Any, has_job: bool, first: dict[str, Any], steps: Any
) -> tuple[str, int | None, uuid.UUID]:
    """What the runner does, raw SQL, each statement its own transaction: the jobs row, the run,
    the region result, then *steps*. Returns (jobspec_id, job id, region result id)."""
    jobspec_id = f"hostile-{uuid.uuid4().hex[:12]}"
    job_id = None
    if has_job:
        job_id = scalar(
            conn,
            "INSERT INTO jobs (jobspec_id, jobspec_data, status, created_at, updated_at) "
            "VALUES (%s, %s, 'queued', now(), now()) RETURNING id",
            (jobspec_id, runner_json(spec)),
        )
    run_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO cross_region_executions (id, jobspec_id, total_regions, "
        "min_regions_required, status, started_at) VALUES (%s, %s, 1, 1, 'running', %s)",
        (run_id, jobspec_id, T0),
    )
    rid = uuid.uuid4()
    conn.execute(
        "INSERT INTO region_results (id, cross_region_execution_id, region, provider_id, status, "
        "started_at, completed_at, execution_output, error_message, model_id) "
        "VALUES (%s, %s, 'US', 'modal-us-east', %s, %s, %s, %s, %s, %s)",
        (
            rid,
            run_id,
            first["status"],
            T0,
            first["completed_at"],
            None if first["execution_output"] is None else runner_json(first["execution_output"]),
            first["error_message"],
            first["model_id"],
        ),
    )
    for action, value in steps:
        if action == "append":
            conn.execute(
                "UPDATE region_results SET execution_output = CASE "
                "WHEN jsonb_typeof(execution_output) = 'object' "
                "     AND jsonb_typeof(execution_output -> 'executions') = 'array' "
                "THEN jsonb_set(execution_output, '{executions}', "
                "    (execution_output -> 'executions') || jsonb_build_array(%s::jsonb)) "
                "ELSE jsonb_build_object('executions', jsonb_build_array(%s::jsonb)) END "
                "WHERE id = %s",
                (runner_json(value), runner_json(value), rid),
            )
        elif action == "replace":
            conn.execute(
                "UPDATE region_results SET status = %s, completed_at = %s, error_message = %s, "
                "execution_output = %s, model_id = %s WHERE id = %s",
                (
                    value["status"],
                    value["completed_at"],
                    value["error_message"],
                    None
                    if value["execution_output"] is None
                    else runner_json(value["execution_output"]),
                    value["model_id"],
                    rid,
                ),
            )
        elif action == "respec" and job_id is not None:
            conn.execute(
                "UPDATE jobs SET jobspec_data = %s, updated_at = now() WHERE id = %s",
                (runner_json(value), job_id),
            )
        elif action == "direct" and job_id is not None:
            make_direct_execution(
                conn, job_id=job_id, region="US", model_id=value[0], question_id=value[1]
            )
        elif action == "undirect" and job_id is not None:
            conn.execute(
                "DELETE FROM executions WHERE job_id = %s AND mirror_region_result_id IS NULL",
                (job_id,),
            )
        elif action == "delete":
            conn.execute("DELETE FROM region_results WHERE id = %s", (rid,))
    return jobspec_id, job_id, rid


def assert_reads_work(conn: psycopg.Connection[Any], jobspec_id: str) -> None:
    """The portal's reads and verify of the job work on whatever was written (and verify finds
    no drift: every write went through the triggers)."""
    json.dumps(portal.executions_all(conn, jobspec_id), default=str)
    json.dumps(portal.job_with_executions(conn, jobspec_id), default=str)
    json.dumps(portal.progress(conn, jobspec_id).to_dict(), default=str)
    report = verify.verify(conn, job=jobspec_id)
    assert report.exit_code == 0, report.to_dict()["findings"][:5]


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    spec=hostile_job_specs(),
    has_job=st.integers(0, 9).map(lambda n: n > 0),
    first=hostile_region_states(),
    steps=runner_steps,
)
def test_hostile_json_never_fails_a_runner_write_and_rows_are_the_rules(
    db: psycopg.Connection[Any], spec: Any, has_job: bool, first: dict[str, Any], steps: Any
) -> None:
    """Job specs and region outputs with nulls and wrong types everywhere (models, questions,
    elements, times, statuses of every JSON type), unicode and control characters, 10 kB
    strings and 200-level nesting, written the runner's way (raw INSERT/UPDATE of jobs and
    region_results, direct executions rows; autocommit): every write commits, no executions row
    breaks a constraint, the rows equal region_results_mirror_rows minus the keys direct rows
    own, and the portal's reads and verify work on them."""
    jobspec_id, _, rid = runner_writes(db, spec, has_job, first, steps)
    assert_no_constraint_violation(db)
    assert_exact(db, [rid])
    assert_reads_work(db, jobspec_id)


@pytest.mark.slow
def test_hostile_json_spec_with_10000_questions(db: psycopg.Connection[Any]) -> None:
    """A spec with 10 000 questions (and junk entries among them, duplicates, a 200-level
    nested entry): the region's INSERT, an appended element, the finishing UPDATE and a spec
    UPDATE all commit; the rows are the rule's: 10 000, then 10 001 pairs. Slow (90–130 s here):
    its reads of the view run on statistics taken before its 10 000 rows (no ANALYZE yet), on
    which PostgreSQL probes each row's key through the (model_id, region) index."""
    questions: list[Any] = [f"q{i:05d}" for i in range(10_000)]
    questions[10:10] = [None, 42, {"id": 7}, "", "q00001", nest("q", 200, True), "x" * 10240]
    spec = seed.jobspec("placeholder", regions=["US"], models=["m1"], questions=["q1"])
    spec["metadata"]["models"] = ["m1", None, {"name": "m1"}]
    spec["questions"] = questions
    first = {
        "status": "running",
        "completed_at": None,
        "error_message": None,
        "execution_output": None,
        "model_id": None,
    }
    started = time.monotonic()
    element = {
        "model_id": "m1",
        "question_id": "q00042",
        "status": "completed",
        "started_at": "2025-10-12T17:00:00Z",
        "completed_at": "2025-10-12T17:00:03Z",
        "output": {"response": "forty-two"},
    }
    jobspec_id, job_id, rid = runner_writes(db, spec, True, first, [("append", element)])
    # While the region runs, only the appended element is stored; the view derives the rest.
    assert (
        scalar(db, "SELECT count(*) FROM executions WHERE mirror_region_result_id = %s", (rid,))
        == 1
    )
    assert (
        scalar(
            db,
            "SELECT count(*) FROM executions_unified WHERE region_result_id = %s "
            "AND status = 'running' AND source = 'derived'",
            (rid,),
        )
        == 9_999
    )
    # The finishing UPDATE keeps the element: the runner's final write sets status and times.
    db.execute(
        "UPDATE region_results SET status = 'success', completed_at = %s, error_message = '' "
        "WHERE id = %s",
        (T0 + timedelta(hours=1), rid),
    )
    assert assert_exact(db, [rid]) == 10_000
    counts = dict(
        db.execute(
            "SELECT status, count(*) FROM executions WHERE mirror_region_result_id = %s GROUP BY 1",
            (rid,),
        ).fetchall()
    )
    assert counts == {"completed": 1, "failed": 9_999}
    spec["questions"].append("q-extra")
    db.execute("UPDATE jobs SET jobspec_data = %s WHERE id = %s", (Jsonb(spec), job_id))
    assert assert_exact(db, [rid]) == 10_001
    assert_no_constraint_violation(db)
    assert_reads_work(db, jobspec_id)
    print(f"\n10 000 questions: {time.monotonic() - started:.1f}s")


def test_hostile_json_2000_elements_in_execution_output(db: psycopg.Connection[Any]) -> None:
    """execution_output.executions with 2 000 elements (1 200 distinct pairs outside the spec's
    models x questions, 400 repeats whose last wins, 400 junk elements of every kind) inserted
    in one statement, then one element appended and the region finished: every write commits;
    the rows are the rule's."""
    els: list[Any] = []
    for i in range(1_200):
        els.append(
            {
                "model_id": f"m{i % 12}",
                "question_id": f"q{i // 12}",
                "status": "completed",
                "started_at": "2025-10-12T17:00:00Z",
                "completed_at": "2025-10-12T17:00:01Z",
                "output": {"response": f"answer {i}"},
                "receipt": {"n": i},
                "error": None,
            }
        )
    for i in range(400):
        els.append(
            {
                "model_id": f"m{i % 12}",
                "question_id": f"q{i // 12}",
                "status": "FAILED ",
                "error": {"nested": ["error", i]},
                "completed_at": 17,
            }
        )
    junk: list[Any] = [
        None,
        42,
        "x",
        [],
        {},
        {"model_id": 5, "question_id": "q"},
        {"model_id": "m", "question_id": None},
        nest("m", 200, False),
        {"model_id": "m" * 10240, "question_id": "q0"},
        {"model_id": "m0", "question_id": "\x01\x1f\u202e"},
    ]
    els.extend(junk[i % len(junk)] for i in range(400))
    assert len(els) == 2_000
    spec = seed.jobspec("placeholder", regions=["US"], models=["m0", "m1"], questions=["q0"])
    first = {
        "status": "running",
        "completed_at": None,
        "error_message": None,
        "execution_output": {"executions": els},
        "model_id": None,
    }
    extra = {"model_id": "m-late", "question_id": "q-late", "status": "completed"}
    jobspec_id, _, rid = runner_writes(db, spec, True, first, [("append", extra)])
    db.execute(
        "UPDATE region_results SET status = 'success', completed_at = %s WHERE id = %s",
        (T0 + timedelta(minutes=30), rid),
    )
    # The 1 200 distinct pairs (the spec's (m0, q0) and (m1, q0) among them), the pair whose
    # question_id is control characters, and the appended one; the 10 kB model_id is skipped.
    assert assert_exact(db, [rid]) == 1_200 + 1 + 1
    assert (
        scalar(
            db,
            "SELECT count(*) FROM executions WHERE mirror_region_result_id = %s "
            "AND status = 'failed' AND original_error = '{\"nested\": [\"error\", 0]}'",
            (rid,),
        )
        == 1
    )
    assert_no_constraint_violation(db)
    assert_reads_work(db, jobspec_id)


def test_hostile_json_200_levels_of_nesting_everywhere(db: psycopg.Connection[Any]) -> None:
    """200-level nesting as the whole spec, as a models entry, as every field of an element and
    as the whole execution_output: every write commits; the rows are the rule's."""
    deep_object = nest("x", 200, True)
    deep_array = nest("x", 200, False)
    spec = seed.jobspec("placeholder", regions=["US"], models=["m1"], questions=["q1"])
    spec["metadata"]["models"] = [deep_object, "m1", deep_array]
    spec["questions"] = [deep_array, "q1"]
    element = {
        "model_id": "m1",
        "question_id": "q1",
        "status": deep_object,
        "started_at": deep_array,
        "completed_at": deep_object,
        "output": deep_object,
        "receipt": deep_array,
        "error": deep_array,
    }
    cases = [
        (deep_object, {"executions": [element, deep_array]}),
        (spec, {"executions": [element, deep_object]}),
        (spec, deep_array),
        (spec, {"executions": deep_object, "data": deep_array}),
        (deep_array, {"data": deep_object, "hash": ""}),
    ]
    for spec_value, output in cases:
        first = {
            "status": "success",
            "completed_at": T0 + timedelta(minutes=1),
            "error_message": "",
            "execution_output": output,
            "model_id": None,
        }
        steps = [("append", element), ("respec", deep_object), ("respec", spec_value)]
        jobspec_id, _, rid = runner_writes(db, spec_value, True, first, steps)
        assert assert_exact(db, [rid]) >= 1
        assert_reads_work(db, jobspec_id)
    assert_no_constraint_violation(db)
