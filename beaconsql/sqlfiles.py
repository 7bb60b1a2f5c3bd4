"""Find the project's ``sql/`` and ``migrations/`` folders and read the SQL in them.

In a source checkout (or an editable install) they sit at the top of the repository; a wheel
carries them inside the package (see ``pyproject.toml``). This module is the one place that
knows both layouts.

Named queries follow procrastinate's convention: a file holds several queries, each opened by
a ``-- name: <query_name>`` line followed by a ``--`` line describing it.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Return the folder *name* (``"sql"`` or ``"migrations"``) for this installation.

    Raises FileNotFoundError naming both places looked at when neither exists.
    """
    candidates = (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"beaconsql's {name}/ folder is missing (looked in {candidates[0]} and {candidates[1]}); "
        "reinstall the package."
    )


@functools.cache
def read_sql(relative_path: str) -> str:
    """Return the text of ``sql/<relative_path>``, e.g. ``views/executions_unified.v1.sql``.

    Files shipped with the package are trusted SQL; callers execute the text as it is.
    """
    return (resource_dir("sql") / relative_path).read_text(encoding="utf-8")


_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@functools.cache
def named_queries(relative_path: str) -> dict[str, str]:
    """Return the queries of ``sql/<relative_path>`` keyed by their ``-- name:`` line."""
    return parse_named_queries(read_sql(relative_path), source=f"sql/{relative_path}")


def parse_named_queries(text: str, *, source: str = "<text>") -> dict[str, str]:
    """Split *text* into its ``-- name: <query_name>`` sections; raise ValueError on a repeat."""
    queries: dict[str, str] = {}
    pieces = _NAME_LINE.split(text)
    # pieces = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(pieces[1::2], pieces[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in {source}")
        queries[name] = body.strip().rstrip(";")
    return queries
