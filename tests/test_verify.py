"""`beaconsql verify` against a real PostgreSQL (SPEC "Verify"; issue 5 "Tests", "Must show").

Drift (exit 3): a region result not mirrored (new, changed or deleted while triggers were
skipped); a mirrored row missing, stale or orphaned; a mirrored row beside a direct row.
Reported with exit 0: anomalies, legacy duplicate direct rows, detached rows. After drift,
`beaconsql backfill` repairs and verify exits 0; executions then equals the oracle of
tests/test_backfill.py (a Python re-implementation of the SPEC's rule, tests only).

Tests that assert the contract where the implementation deviates are marked
``xfail(strict=True)`` with the reason; each carries a minimal repro in its docstring.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import psycopg
from factories import (
    element,
    make_direct_execution,
    make_job,
    make_region_result,
    make_run,
    small_spec,
    write_history,
)
from helpers import (
    T0,
    assert_one_mirrored_row_per_key,
    cli,
    fetch,
    mirrored_count,
    new_york,
    not_mirrored,
    region_result_count,
    run_backfill,
    snapshot,
    triggers_skipped,
)
from oracle import assert_matches_oracle
from psycopg.types.json import Jsonb

from beaconsql import seed, verify, writer

DRIFT_KINDS = (
    "not_mirrored",
    "deleted_unmirrored",
    "missing",
    "stale",
    "orphaned",
    "beside_direct",
)


def run_verify(dsn: str, job: str | None = None) -> verify.Report:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return verify.verify(new_york(conn), job=job)


def findings(report: verify.Report) -> set[tuple[str, str | None, int | None]]:
    return {(f.kind, f.region_result_id, f.execution_id) for f in report.drift}


def kinds(report: verify.Report) -> dict[str, int]:
    return {k: report.counts[k] for k in DRIFT_KINDS if report.counts[k]}


def recorded_job(
    conn: psycopg.Connection[Any],
    models: list[str],
    questions: list[str],
    regions: tuple[str, ...] = ("US",),
) -> tuple[dict[str, Any], seed.RecordedRun]:
    """A job recorded through the writer, triggers on (mirrored as it goes)."""
    spec = small_spec(models, questions, regions=regions)
    return spec, seed.record_with_writer(conn, spec)


def row_id(
    conn: psycopg.Connection[Any], region_result_id: uuid.UUID, model_id: str, question_id: str
) -> int:
    row = conn.execute(
        "SELECT id FROM executions WHERE mirror_region_result_id = %s "
        "AND model_id = %s AND question_id = %s",
        (region_result_id, model_id, question_id),
    ).fetchone()
    assert row is not None
    return int(row[0])


# ============================================================================================
# No drift
# ============================================================================================


def test_verify_exits_0_after_backfill_and_lists_anomalies_and_duplicates(
    db: Any, dsn: str
) -> None:
    """History of every shape, backfilled: no drift. Anomalies the mirror recorded and the
    legacy duplicate direct rows are reported, with exit 0; verify writes nothing."""
    history = write_history(db)
    run_backfill(dsn)
    before = snapshot(db)

    report = run_verify(dsn)

    assert report.exit_code == 0, report.to_dict()["findings"]
    assert kinds(report) == {} and report.drift == []
    assert report.examined == region_result_count(db)
    assert snapshot(db) == before
    anomaly_kinds = Counter(a["kind"] for a in report.anomalies)
    assert set(anomaly_kinds) >= {
        "missing_job",
        "malformed_models",
        "malformed_questions",
        "invalid_element",
        "unknown_status",
        "unfinished_element",
        "invalid_time",
        "id_too_long",
    }
    by_rr = {a["region_result_id"] for a in report.anomalies}
    assert str(history.region_results["missing"]) in by_rr
    assert str(history.region_results["elements"]) in by_rr
    dups = [
        (d["jobspec_id"], d["region"], d["model_id"], d["question_id"], d["rows"])
        for d in report.duplicates
    ]
    assert dups == [(history.jobs["direct"], "US", "llama3.2-1b", "greatest_invention", 2)]
    assert len(report.duplicates[0]["execution_ids"]) == 2
    assert report.detached == []

    result = cli(["verify", "--dsn", dsn])
    assert result.exit_code == 0, result.output
    assert "no drift" in result.stdout
    assert f"anomalies recorded (reported only): {len(report.anomalies)}" in result.stdout
    assert "legacy duplicate direct rows hidden by the view: 1 keys" in result.stdout


def test_anomalies_duplicates_and_detached_rows_alone_exit_0(db: Any, dsn: str) -> None:
    """Recorded with the triggers on (no backfill): a malformed spec, an unknown status, a
    job whose runner wrote a key twice, a mirrored row the runner cancelled (detached). verify
    exits 0 and lists each."""
    spec = small_spec("not-a-list", ["q1"], regions=("US",))
    spec["metadata"]["model"] = "m1"
    job = make_job(db, jobspec_id=spec["id"], jobspec_data=spec)
    x = make_run(db, jobspec_id=spec["id"])
    rr = make_region_result(
        db,
        cross_region_execution_id=x["id"],
        status="exploded",
        completed_at=T0 + timedelta(minutes=1),
        error_message="kaboom",
    )["id"]
    for _ in range(3):
        make_direct_execution(db, job_id=job["id"], region="EU", model_id="m9", question_id="q1")
    spec2, run2 = recorded_job(db, ["m1", "m2"], ["q1"])
    cancelled = row_id(db, run2.region_result_ids["US"], "m2", "q1")
    db.execute(
        "UPDATE executions SET status = 'cancelled', completed_at = now() WHERE id = %s",
        (cancelled,),
    )

    report = run_verify(dsn)

    assert report.exit_code == 0, report.to_dict()["findings"]
    assert kinds(report) == {}
    assert {(a["kind"], a["region_result_id"], a["jobspec_id"]) for a in report.anomalies} == {
        ("malformed_models", str(rr), spec["id"]),
        ("unknown_status", str(rr), spec["id"]),
    }
    assert [
        (d["jobspec_id"], d["region"], d["model_id"], d["question_id"], d["rows"])
        for d in report.duplicates
    ] == [(spec["id"], "EU", "m9", "q1", 3)]
    assert [(d["execution_id"], d["jobspec_id"], d["status"]) for d in report.detached] == [
        (cancelled, spec2["id"], "cancelled")
    ]

    result = cli(["verify", "--dsn", dsn, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["drift"] is False and data["exit_code"] == 0
    assert len(data["anomalies"]) == 2 and len(data["legacy_duplicates"]) == 1
    assert data["detached"][0]["execution_id"] == cancelled


# ============================================================================================
# Drift: named, then repaired by backfill
# ============================================================================================


def test_drift_is_named_and_backfill_repairs_it(db: Any, dsn: str) -> None:
    """Every kind of drift, each on its own region result: verify exits 3 and names each
    (kind, region result, executions row); `beaconsql backfill` repairs all of it; verify then
    exits 0 and executions equals the oracle."""
    _, changed = recorded_job(db, ["m1", "m2"], ["q1"])
    _, deleted = recorded_job(db, ["m1", "m2"], ["q1"])
    _, hand_deleted = recorded_job(db, ["m1", "m2"], ["q1"])
    _, stale = recorded_job(db, ["m1", "m2"], ["q1"])
    _, quietly_deleted = recorded_job(db, ["m1", "m2"], ["q1"])
    beside_spec, beside = recorded_job(db, ["m1", "m2"], ["q1"])
    _, released = recorded_job(db, ["m1", "m2"], ["q1"])
    released_direct = make_direct_execution(
        db, job_id=released.job_id, region="US", model_id="m2", question_id="q1"
    )["id"]
    # A region finished with no pair recorded (its expected pairs stored, failed) whose job
    # loses a question.
    respec_spec = small_spec(["m1"], ["q1", "q2"], regions=("US",))
    writer.create_job(db, respec_spec)
    respec_run = writer.start_run(db, respec_spec["id"], regions=["US"], started_at=T0)
    respec = seed.RecordedRun(
        None,
        respec_run,
        {
            "US": writer.start_region(
                db, respec_run, "US", provider_id="modal-us-east", started_at=T0
            )
        },
    )
    writer.finish_region(db, respec.region_result_ids["US"], completed_at=T0 + timedelta(1))
    _, logged = recorded_job(db, ["m1"], ["q1"])
    rr = {
        name: run.region_result_ids["US"]
        for name, run in {
            "changed": changed,
            "deleted": deleted,
            "hand_deleted": hand_deleted,
            "stale": stale,
            "quietly_deleted": quietly_deleted,
            "beside": beside,
            "respec": respec,
            "logged": logged,
            "released": released,
        }.items()
    }
    # A job missing when its region result was mirrored, arriving with triggers skipped.
    late_spec = small_spec(["m1", "m2"], ["q1"], regions=("US",))
    x = make_run(db, jobspec_id=late_spec["id"])
    rr["late_job"] = make_region_result(
        db,
        cross_region_execution_id=x["id"],
        status="success",
        completed_at=T0 + timedelta(minutes=1),
        error_message="",
        execution_output={"executions": [element("m2", "q1")]},
    )["id"]
    assert run_verify(dsn).exit_code == 0

    ids = {
        "hand_deleted": row_id(db, rr["hand_deleted"], "m1", "q1"),
        "stale": row_id(db, rr["stale"], "m2", "q1"),
        "quietly_deleted": row_id(db, rr["quietly_deleted"], "m1", "q1"),
        "beside": row_id(db, rr["beside"], "m1", "q1"),
        "respec_q2": row_id(db, rr["respec"], "m1", "q2"),
        "logged": row_id(db, rr["logged"], "m1", "q1"),
    }
    db.execute(
        "INSERT INTO transparency_log (execution_id, job_id, region, provider_id, status) "
        "SELECT id, 'logged', region, provider_id, status FROM executions WHERE id = %s",
        (ids["logged"],),
    )
    deleted_rows = mirrored_count(db)
    with triggers_skipped(db, ("region_results",)):
        db.execute(
            "UPDATE region_results SET execution_output = jsonb_set(execution_output, "
            "'{executions,0,output}', '{\"response\": \"edited\"}') WHERE id = %s",
            (rr["changed"],),
        )
        db.execute(
            "DELETE FROM region_results WHERE id = ANY(%s)", ([rr["deleted"], rr["logged"]],)
        )
        rr["new"] = make_region_result(db, cross_region_execution_id=changed.run_id, region="EU")[
            "id"
        ]
    db.execute("DELETE FROM executions WHERE id = %s", (ids["hand_deleted"],))  # triggers on
    with triggers_skipped(db, ("executions",)):
        db.execute(
            "UPDATE executions SET status = 'failed', original_error = 'hand fix' WHERE id = %s",
            (ids["stale"],),
        )
        db.execute("DELETE FROM executions WHERE id = %s", (ids["quietly_deleted"],))
        make_direct_execution(
            db, job_id=beside.job_id, region="US", model_id="m1", question_id="q1"
        )
        # The runner's direct row leaves: its key goes back to the mirror (nothing there yet).
        db.execute("DELETE FROM executions WHERE id = %s", (released_direct,))
    with triggers_skipped(db, ("jobs",)):
        respec_spec["questions"] = ["q1"]
        db.execute(
            "UPDATE jobs SET jobspec_data = %s WHERE jobspec_id = %s",
            (Jsonb(respec_spec), respec_spec["id"]),
        )
        make_job(db, jobspec_id=late_spec["id"], jobspec_data=late_spec)
    assert deleted_rows == mirrored_count(db) + 2  # the hand delete and the quiet one

    report = run_verify(dsn)

    assert report.exit_code == 3
    got = findings(report)
    s = {k: str(v) for k, v in rr.items()}
    expected = {
        ("not_mirrored", s["changed"], None),
        ("stale", s["changed"], row_id(db, rr["changed"], "m1", "q1")),
        ("not_mirrored", s["new"], None),  # running: nothing stored to miss
        ("deleted_unmirrored", s["deleted"], None),
        ("deleted_unmirrored", s["logged"], None),
        ("not_mirrored", s["hand_deleted"], None),
        ("missing", s["hand_deleted"], None),
        ("stale", s["stale"], ids["stale"]),
        ("missing", s["quietly_deleted"], None),
        ("beside_direct", s["beside"], ids["beside"]),
        ("not_mirrored", s["respec"], None),
        ("orphaned", s["respec"], ids["respec_q2"]),
        ("not_mirrored", s["late_job"], None),
        ("missing", s["released"], None),
    }
    assert expected <= got, sorted(expected - got)
    # Nothing else is reported as drift for region results that did not drift.
    assert {f[1] for f in got} == set(s.values())
    assert set(kinds(report)) == set(DRIFT_KINDS)
    by_kind = {f.kind: f for f in report.drift}
    assert by_kind["deleted_unmirrored"].detail.startswith("deleted while triggers were skipped")
    changed_finding = next(
        f for f in report.drift if f.kind == "not_mirrored" and f.region_result_id == s["changed"]
    )
    assert "changed while triggers were skipped" in changed_finding.detail
    new_finding = next(
        f for f in report.drift if f.kind == "not_mirrored" and f.region_result_id == s["new"]
    )
    assert new_finding.detail == (
        "not mirrored yet (written before the mirror was installed, or while its triggers were "
        "skipped)"
    )

    result = cli(["verify", "--dsn", dsn])
    assert result.exit_code == 3
    assert "DRIFT" in result.stdout and "beaconsql backfill" in result.stdout
    for kind in DRIFT_KINDS:
        assert f"{kind}:" in result.stdout
    for name in ("changed", "deleted", "hand_deleted", "stale", "beside", "respec"):
        assert s[name] in result.stdout

    summary = run_backfill(dsn, batch_size=2)
    assert summary.complete
    assert summary.inserted >= 3 and summary.updated >= 2 and summary.deleted >= 3
    assert summary.detached == 1

    after = run_verify(dsn)
    assert after.exit_code == 0, after.to_dict()["findings"]
    assert not_mirrored(db) == set()
    assert_matches_oracle(db)
    assert_one_mirrored_row_per_key(db)
    # The logged row was kept (the transparency log references it), as a detached row.
    assert [d["execution_id"] for d in after.detached] == [ids["logged"]]
    assert any(a["kind"] == "transparency_log_reference" for a in after.anomalies)
    # A direct row owns its key; the late job's rows carry its id.
    assert db.execute(
        "SELECT count(*) FROM executions WHERE job_id = %s AND model_id = 'm1' "
        "AND question_id = 'q1'",
        (beside.job_id,),
    ).fetchone() == (1,)
    assert db.execute(
        "SELECT count(*) FROM executions WHERE mirror_region_result_id = %s AND job_id IS NOT NULL",
        (rr["late_job"],),
    ).fetchone() == (2,)
    assert run_backfill(dsn).changed == 0


def test_verify_json_shape(db: Any, dsn: str) -> None:
    """--json: drift, exit_code, region_results_examined, counts (every kind), findings (kind,
    region_result_id, execution_id, jobspec_id, detail), anomalies, legacy_duplicates,
    detached. Exit 3 with drift, the JSON still on stdout."""
    spec, run = recorded_job(db, ["m1", "m2"], ["q1"])
    rid = run.region_result_ids["US"]
    target = row_id(db, rid, "m1", "q1")
    with triggers_skipped(db, ("executions",)):
        db.execute(
            'UPDATE executions SET output_data = \'{"response": "x"}\' WHERE id = %s', (target,)
        )

    result = cli(["verify", "--dsn", dsn, "--json"])

    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert set(data) == {
        "drift",
        "exit_code",
        "region_results_examined",
        "counts",
        "findings",
        "anomalies",
        "legacy_duplicates",
        "detached",
    }
    assert data["drift"] is True and data["exit_code"] == 3
    assert data["region_results_examined"] == 1
    assert data["counts"] == {k: (1 if k == "stale" else 0) for k in DRIFT_KINDS}
    assert data["findings"] == [
        {
            "kind": "stale",
            "region_result_id": str(rid),
            "execution_id": target,
            "jobspec_id": spec["id"],
            "detail": data["findings"][0]["detail"],
        }
    ]
    assert "m1" in data["findings"][0]["detail"]
    assert data["anomalies"] == [] and data["legacy_duplicates"] == [] and data["detached"] == []


def test_verify_job_option_restricts_findings(db: Any, dsn: str) -> None:
    """--job: only that job's region results are examined and reported."""
    spec_a, run_a = recorded_job(db, ["m1"], ["q1"], regions=("US", "EU"))
    spec_b, run_b = recorded_job(db, ["m1"], ["q1"])
    with triggers_skipped(db, ("region_results",)):
        db.execute(
            "UPDATE region_results SET error_message = 'edited' WHERE id = ANY(%s)",
            ([run_a.region_result_ids["US"], run_b.region_result_ids["US"]],),
        )
    for_a = run_verify(dsn, job=spec_a["id"])
    assert for_a.exit_code == 3 and for_a.examined == 2
    assert {f.region_result_id for f in for_a.drift} == {str(run_a.region_result_ids["US"])}
    assert {f.jobspec_id for f in for_a.drift} == {spec_a["id"]}
    assert run_verify(dsn).counts["not_mirrored"] == 2
    result = cli(["verify", "--dsn", dsn, "--job", spec_b["id"], "--json"])
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["region_results_examined"] == 1
    assert {f["region_result_id"] for f in data["findings"]} == {str(run_b.region_result_ids["US"])}
    result = cli(["verify", "--dsn", dsn, "--job", "no-such-job"])
    assert result.exit_code == 1, result.output  # an unknown job, named (tests/test_cli.py)
    assert result.stderr.startswith("FAILED: no job 'no-such-job'")


def test_verify_job_option_reports_the_jobs_deleted_region_results(db: Any, dsn: str) -> None:
    """Repro: record a job through the writer (triggers on); `ALTER TABLE region_results
    DISABLE TRIGGER USER; DELETE FROM region_results WHERE id = <its region result>; ENABLE`;
    `beaconsql verify` exits 3 (deleted_unmirrored), `beaconsql verify --job <jobspec_id>`
    exits 0, although the job's orphaned mirrored rows are still in executions (the portal's
    naive read shows them)."""
    spec, run = recorded_job(db, ["m1", "m2"], ["q1"])
    with triggers_skipped(db, ("region_results",)):
        db.execute("DELETE FROM region_results WHERE id = %s", (run.region_result_ids["US"],))
    assert fetch(db, "SELECT count(*) AS n FROM executions WHERE job_id = %s", (run.job_id,)) == [
        {"n": 2}
    ]
    assert run_verify(dsn).exit_code == 3
    report = run_verify(dsn, job=spec["id"])
    assert report.exit_code == 3
    assert report.counts["deleted_unmirrored"] == 1


def test_verify_before_any_backfill_reports_every_history_region_result(db: Any, dsn: str) -> None:
    """History written with triggers skipped is not mirrored: verify says so for each region
    result (exit 3), as the view already shows its rows; backfill then makes it exit 0."""
    write_history(db)
    report = run_verify(dsn)
    assert report.exit_code == 3
    assert report.counts["not_mirrored"] == region_result_count(db)
    assert {f.region_result_id for f in report.drift if f.kind == "not_mirrored"} == {
        str(r) for r in not_mirrored(db)
    }
    run_backfill(dsn)
    assert run_verify(dsn).exit_code == 0


def test_verify_is_read_only_with_drift(db: Any, dsn: str) -> None:
    """verify with drift present writes nothing (no state, no anomaly, no executions row)."""
    write_history(db)
    before = snapshot(db)
    assert run_verify(dsn).exit_code == 3
    assert cli(["verify", "--dsn", dsn, "--json"]).exit_code == 3
    assert snapshot(db) == before


def test_dry_run_reports_what_repairing_drift_would_do(db: Any, dsn: str) -> None:
    """backfill --dry-run on drift: the same summary as the real repair, nothing written."""
    _, run = recorded_job(db, ["m1", "m2"], ["q1", "q2"])
    rid = run.region_result_ids["US"]
    with triggers_skipped(db, ("region_results",)):
        db.execute("UPDATE region_results SET status = 'cancelled' WHERE id = %s", (rid,))
    with triggers_skipped(db, ("executions",)):
        db.execute("DELETE FROM executions WHERE id = %s", (row_id(db, rid, "m2", "q2"),))
    before = snapshot(db)
    dry = run_backfill(dsn, dry_run=True)
    assert snapshot(db) == before
    real = run_backfill(dsn)
    ignore = {"run_id", "dry_run", "elapsed_seconds"}
    assert {k: v for k, v in dry.to_dict().items() if k not in ignore} == {
        k: v for k, v in real.to_dict().items() if k not in ignore
    }
    assert real.inserted == 1
    assert run_verify(dsn).exit_code == 0
    assert_matches_oracle(db)
