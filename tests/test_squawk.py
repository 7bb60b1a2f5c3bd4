"""Each revision's offline SQL passes squawk (the migration lock linter) with no warning: every
accepted one is ignored in the SQL itself, next to a comment that says why."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from beaconsql import migration


def _revisions() -> list[tuple[str, str]]:
    script = ScriptDirectory.from_config(migration.alembic_config())
    ordered = list(reversed(list(script.walk_revisions())))
    return [(r.down_revision or "base", r.revision) for r in ordered]  # type: ignore[misc]


def _squawk() -> str:
    found = shutil.which("squawk") or str(Path(sys.executable).with_name("squawk"))
    if not Path(found).exists():
        pytest.fail("squawk is missing: install the development extras (pip install -e .[dev])")
    return found


@pytest.mark.parametrize(("previous", "revision"), _revisions())
def test_offline_upgrade_sql_passes_squawk(tmp_path, previous, revision):
    script = migration.upgrade(
        None, f"{previous}:{revision}" if previous != "base" else revision, sql=True
    )
    assert isinstance(script, str) and "lock_timeout" in script
    path = tmp_path / f"{revision}.sql"
    path.write_text(script)
    result = subprocess.run([_squawk(), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Found 0 issues" in result.stdout
