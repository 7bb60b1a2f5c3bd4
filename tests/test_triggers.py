"""The mirror's triggers, whoever writes and at whatever depth (SPEC "Any writer, at any
depth"): a change made by another trigger or function is mirrored, detached or forgotten
exactly as the same statement run directly."""

from __future__ import annotations

from typing import Any

import psycopg
from helpers import fetch
from psycopg import sql

from beaconsql import backfill, roles, seed, verify, writer

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
