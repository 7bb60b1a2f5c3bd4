"""Which jobs exist: a misspelt jobspec id told apart from a job without rows.

The portal's reads give ``[]`` for an unknown job, as the portal needs (SPEC "Portal reads");
the CLI calls :func:`require_known` first, so that ``beaconsql executions <typo>`` names the
closest ids instead of printing nothing. A job is known when a ``jobs`` row or a run
(``cross_region_executions``) has its jobspec id.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import psycopg

from beaconsql.errors import UnknownJobError
from beaconsql.sqlfiles import named_queries

SUGGESTION_CANDIDATES = 50  # per source and direction: a bounded read, whatever the history


def _queries() -> Mapping[str, Any]:
    return named_queries("queries/jobs.sql")


def closest_ids(conn: psycopg.Connection[Any], jobspec_id: str, *, limit: int = 3) -> list[str]:
    """Return up to *limit* existing jobspec ids (of jobs or runs) most like *jobspec_id*, best
    first.

    The candidates are the ids next to it in sort order (a typo near the end keeps the prefix)
    and the newest jobs and runs: at most ``6 × SUGGESTION_CANDIDATES`` ids, read through
    indexes. :func:`difflib.get_close_matches` ranks them (similarity at least 0.6).
    """
    candidates = [
        str(row[0])
        for row in conn.execute(
            _queries()["candidates"], {"jobspec_id": jobspec_id, "n": SUGGESTION_CANDIDATES}
        )
    ]
    return difflib.get_close_matches(jobspec_id, candidates, n=limit, cutoff=0.6)


def require_known(conn: psycopg.Connection[Any], jobspec_id: str) -> None:
    """Raise :class:`UnknownJobError`, with the closest ids, unless a jobs row or a run has
    *jobspec_id*."""
    row = conn.execute(_queries()["known"], {"jobspec_id": jobspec_id}).fetchone()
    if row is not None and row[0]:
        return
    raise UnknownJobError(
        jobspec_id, closest_ids(conn, jobspec_id), any_jobs=bool(row is not None and row[1])
    )
