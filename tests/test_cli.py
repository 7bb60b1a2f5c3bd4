"""The ``beaconsql`` command against the contract (SPEC "Running it", "Portal reads", "Worked
example"; issues 4 and 7: hostile input, secrets): exit codes 0/1/2/3, ``FAILED: ...`` on
stderr, no traceback, no password anywhere, usage errors before any database access.

Most tests use click's CliRunner; process-level behaviour (``--debug``, which the command reads
from ``sys.argv``, and raw ``argv`` bytes) runs ``python -m beaconsql.cli`` in a subprocess.

Tests that assert the contract where the implementation deviates are marked
``xfail(strict=True)`` with the reason; each carries a minimal repro in its docstring.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from conftest import dsn_of
from psycopg import sql

from beaconsql import db as beacon_db
from beaconsql import migration, portal, seed
from beaconsql.cli import main

PASSWORD = "S3cretPassw0rd"
UNREACHABLE = f"postgresql://u:{PASSWORD}@127.0.0.1:1/db"
NO_DSN_ENV: dict[str, str | None] = {"BEACONSQL_DATABASE_URL": None, "DATABASE_URL": None}
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
    ["status"],
    ["backfill"],
    ["verify"],
    ["executions", "X"],
    ["progress", "X"],
    ["grant"],
]
JSON_COMMANDS = [c for c in DB_COMMANDS if c[0] != "upgrade"]
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


def cli(
    args: Sequence[str], *, dsn: str | None = None, env: dict[str, str | None] | None = None
) -> Result:
    """Invoke ``beaconsql`` in-process, with no DSN in the environment unless *dsn* is given
    (then as BEACONSQL_DATABASE_URL)."""
    environment = dict(NO_DSN_ENV)
    if dsn is not None:
        environment["BEACONSQL_DATABASE_URL"] = dsn
    environment.update(env or {})
    return CliRunner().invoke(main, list(args), env=environment)


def run_process(
    args: Sequence[str | bytes], *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m beaconsql.cli`` as a real process (bytes out)."""
    environment = {
        k: v for k, v in os.environ.items() if k not in ("BEACONSQL_DATABASE_URL", "DATABASE_URL")
    }
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "beaconsql.cli", *args],
        capture_output=True,
        env=environment,
        timeout=120,
        check=False,
    )


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
# Hostile input
# --------------------------------------------------------------------------------------------


def test_hostile_job_ids_are_data(seeded, dsn):
    for jobspec_id in HOSTILE_IDS:
        label = repr(jobspec_id[:24])
        result = cli(["executions", jobspec_id, "--json"], dsn=dsn)
        assert result.exit_code == 0, (label, everything(result))
        assert json.loads(result.stdout) == {"executions": []}, label

        result = cli(["executions", jobspec_id, "--json", "--limit", "3"], dsn=dsn)
        assert result.exit_code == 0, (label, everything(result))
        assert json.loads(result.stdout)["executions"] == [], label

        result = cli(["progress", jobspec_id, "--json"], dsn=dsn)
        assert result.exit_code == 0, (label, everything(result))
        p = json.loads(result.stdout)
        assert (p["jobspec_id"], p["expected"], p["grid"]) == (jobspec_id, 0, []), label

        for args in (
            ["executions", jobspec_id],
            ["progress", jobspec_id],
            ["verify", "--job", jobspec_id],
            ["backfill", "--job", jobspec_id, "--json"],
        ):
            result = cli(args, dsn=dsn)
            assert result.exit_code == 0, (label, args[0], everything(result))
            clean_exit(result)
        assert jobs_exists(seeded), label
    assert seeded.execute("SELECT count(*) FROM executions").fetchone()[0] == 18


def test_job_id_with_invalid_utf8_bytes_is_data(seeded, dsn):
    """Repro: beaconsql executions $'\\xff\\xfe' --json --dsn <db>
    -> Traceback ... UnicodeEncodeError: 'utf-8' codec can't encode characters in position
    0-1: surrogates not allowed (exit 1). Same for progress."""
    for command in ("executions", "progress"):
        done = run_process([command, b"\xff\xfe", "--json"], env={"BEACONSQL_DATABASE_URL": dsn})
        output = (done.stdout + done.stderr).decode("utf-8", "replace")
        assert b"Traceback" not in done.stdout + done.stderr, output
        assert done.returncode in (0, 2), output
    assert jobs_exists(seeded)


def test_human_output_prints_data_as_it_is(db, dsn):
    """Repro: beaconsql executions 'job-:thumbs_up:' --dsn <db>
    prints "No executions for job-👍 ..." (cli.py: Console(markup=False, highlight=False)
    but emoji left on). Same for an answer ':smile:' in the executions table."""
    job_id = "job-:thumbs_up:"
    for command in ("executions", "progress"):
        result = cli([command, job_id], dsn=dsn)
        assert result.exit_code == 0, everything(result)
        assert job_id in result.stdout, result.stdout
    spec = seed.jobspec("bias-detection-emoji")
    seed.record_with_writer(db, spec)
    db.execute("""UPDATE executions SET output_data = '{"response": "yes :smile:"}'""")
    result = cli(["executions", spec["id"]], dsn=dsn)
    assert "yes :smile:" in result.stdout


def test_unknown_job_exits_0(db, dsn):
    for args in (
        ["executions", "no-such-job"],
        ["executions", "no-such-job", "--json"],
        ["progress", "no-such-job"],
        ["progress", "no-such-job", "--json"],
    ):
        result = cli(args, dsn=dsn)
        assert result.exit_code == 0, everything(result)
        clean_exit(result)
    assert json.loads(cli(["executions", "no-such-job", "--json"], dsn=dsn).stdout) == {
        "executions": []
    }


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
    done = run_process(["--debug", *args, "--dsn", UNREACHABLE])
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 1, output
    assert PASSWORD not in output
    assert "FAILED: " in output


def test_password_never_shown_as_a_process_without_debug():
    done = run_process(["executions", "X", "--json"], env={"BEACONSQL_DATABASE_URL": UNREACHABLE})
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 1
    assert_no_secret(output)
    assert done.stdout == b""


BAD_USAGE = [
    ["backfill", "--batch-size", "-5"],
    ["backfill", "--batch-size", "0"],
    ["backfill", "--since", "yesterday"],
    ["backfill", "--sleep", "-1"],
    ["executions"],
    ["executions", "X", "--limit", "0"],
    ["executions", "X", "--limit", "201"],
    ["executions", "X", "--offset", "-1"],
    ["progress"],
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


def test_upgrade_empty_database_then_again(empty_db):
    dsn = dsn_of(empty_db)
    head = migration.head_revision()
    first = cli(["upgrade"], dsn=dsn)
    assert first.exit_code == 0, everything(first)
    assert f"-> {head}" in first.stdout
    assert empty_db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head
    second = cli(["upgrade"], dsn=dsn)
    assert second.exit_code == 0, everything(second)
    assert f"already at revision {head}" in second.stdout


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


def public_tables(conn: psycopg.Connection[Any]) -> list[str]:
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
        public_tables(db),
        db.execute(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM executions), "
            "(SELECT count(*) FROM region_results)"
        ).fetchone(),
    )
    with psycopg.connect(demo_server, autocommit=True) as maintenance:
        before_maintenance = public_tables(maintenance)
    for _ in range(2):
        result = cli(["demo", "--dsn", demo_server])
        assert result.exit_code == 0, everything(result)
        clean_exit(result)
        assert f"{seed.SEED_JOBSPEC_ID}: 18 executions" in result.stdout
        assert f"{seed.SEED_JOBSPEC_ID}: job status completed: 18/18 done (100.0%)" in (
            result.stdout
        )
        assert f"{seed.LEGACY_JOBSPEC_ID}: 18 executions" in result.stdout
        assert "beaconsql_demo" in result.stdout
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
        public_tables(db),
        db.execute(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM executions), "
            "(SELECT count(*) FROM region_results)"
        ).fetchone(),
    )
    assert after_db == before_db
    assert portal.progress(db, seed.SEED_JOBSPEC_ID).grid == []  # the demo's job is not here
    with psycopg.connect(demo_server, autocommit=True) as maintenance:
        assert public_tables(maintenance) == before_maintenance
    with psycopg.connect(beacon_db.with_dbname(demo_server, "beaconsql_demo")) as demo_db:
        assert (
            demo_db.execute(
                "SELECT count(*) FROM executions_unified WHERE jobspec_id = %s",
                (seed.SEED_JOBSPEC_ID,),
            ).fetchone()[0]
            == 18
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
            done = run_process(["--debug", *args, "--dsn", target])
            output = (done.stdout + done.stderr).decode()
            assert done.returncode == code, (args, output)
            assert PASSWORD not in output, args
