"""Prove there is no drift between what is materialised and what the rule yields
(``beaconsql verify``; SPEC "Verify").

Drift (exit 3): a region result not mirrored (new, changed or deleted while triggers were
skipped); a mirrored row missing, stale (a mirror-owned column differs) or orphaned; a mirrored
row beside a direct row of its key. Reported only (exit 0): anomalies the mirror recorded,
legacy duplicate direct rows the view hides, detached rows. The comparison is
``region_results_mirror_plan``, the diff the triggers and the backfill apply, run read-only in
keyset batches; `beaconsql backfill` repairs whatever it finds.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from beaconsql import db, migration
from beaconsql.errors import InvalidArgumentError
from beaconsql.sqlfiles import named_queries

NIL_UUID = uuid.UUID(int=0)
DRIFT_KINDS = (
    "not_mirrored",
    "deleted_unmirrored",
    "missing",
    "stale",
    "orphaned",
    "beside_direct",
)
LISTED = 200  # findings listed per kind; all are counted


# What each finding of the plan (the SQL type executions_mirror_finding) means.
_DETAIL = {
    "missing": "a stored row of the rule is missing",
    "stale": "a column the mirror owns differs from the rule's",
    "orphaned": "its region result no longer exists, or the rule no longer yields its pair",
    "beside_direct": "a direct row owns its key",
}


def _queries() -> Mapping[str, Any]:
    return named_queries("queries/verify.sql")


@dataclass(frozen=True)
class Finding:
    """One piece of drift: its kind, the region result and executions row concerned."""

    kind: str
    region_result_id: str | None
    execution_id: int | None
    jobspec_id: str | None
    detail: str


@dataclass
class Report:
    """What verify found. ``drift`` lists at most LISTED findings per kind; ``counts`` counts
    them all. ``exit_code`` is 3 when there is drift, else 0."""

    examined: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    drift: list[Finding] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    detached: list[dict[str, Any]] = field(default_factory=list)

    @property
    def has_drift(self) -> bool:
        return any(self.counts[k] for k in DRIFT_KINDS)

    @property
    def exit_code(self) -> int:
        return 3 if self.has_drift else 0

    def add(self, finding: Finding) -> None:
        self.counts[finding.kind] += 1
        if self.counts[finding.kind] <= LISTED:
            self.drift.append(finding)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drift": self.has_drift,
            "exit_code": self.exit_code,
            "region_results_examined": self.examined,
            "counts": {k: self.counts[k] for k in DRIFT_KINDS},
            "findings": [f.__dict__ for f in self.drift],
            "anomalies": self.anomalies,
            "legacy_duplicates": self.duplicates,
            "detached": self.detached,
        }


def verify(
    conn: psycopg.Connection[Any], *, job: str | None = None, batch_size: int = 1000
) -> Report:
    """Compare the materialised mirror with the rule, for *job* or the whole database.

    Read-only. Raises NotMigratedError on an unmigrated database.
    """
    if batch_size < 1:
        raise InvalidArgumentError(f"batch size must be a positive integer, got {batch_size!r}")
    db.adapt_to_pooler(conn)
    migration.require_head(conn)
    q = _queries()
    report = Report()
    cursor = NIL_UUID
    while True:
        batch = conn.execute(
            q["region_results_batch"], {"cursor": cursor, "job": job, "batch_size": batch_size}
        ).fetchall()
        if not batch:
            break
        cursor = batch[-1][0]
        report.examined += len(batch)
        jobspec_of = {rid: jobspec for rid, jobspec, _, _ in batch}
        for rid, jobspec, mirrored, has_state in batch:
            if not mirrored:
                report.add(
                    Finding(
                        "not_mirrored",
                        str(rid),
                        None,
                        jobspec,
                        "changed while triggers were skipped"
                        if has_state
                        else "not mirrored yet (written before the mirror was installed, or "
                        "while its triggers were skipped)",
                    )
                )
        ids = [row[0] for row in batch]
        for kind, action, rid, execution_id, model_id, question_id in conn.execute(
            q["differences"], {"ids": ids}
        ):
            report.add(
                Finding(
                    kind,
                    str(rid),
                    execution_id,
                    jobspec_of.get(rid),
                    f"({model_id}, {question_id}): {_DETAIL[kind]}; applying the rule would "
                    f"{action} it",
                )
            )
    for rid, rows_left in conn.execute(q["deleted_unmirrored"], {"job": job}):
        report.add(
            Finding(
                "deleted_unmirrored",
                str(rid),
                None,
                job,
                f"deleted while triggers were skipped; {rows_left} mirrored rows left behind",
            )
        )
    report.anomalies = [
        {
            "kind": k,
            "region_result_id": str(r),
            "jobspec_id": j,
            "detail": d,
            "first_seen": s.isoformat(),
        }
        for k, r, j, d, s in conn.execute(q["anomalies"], {"job": job})
    ]
    report.duplicates = [
        {
            "jobspec_id": j,
            "region": r,
            "model_id": m,
            "question_id": qid,
            "rows": n,
            "execution_ids": ids,
        }
        for j, r, m, qid, n, ids in conn.execute(q["duplicates"], {"job": job})
    ]
    report.detached = [
        {
            "execution_id": i,
            "jobspec_id": j,
            "region": r,
            "model_id": m,
            "question_id": qid,
            "status": s,
        }
        for i, j, r, m, qid, s in conn.execute(q["detached"], {"job": job})
    ]
    return report


def finding_counts(report: Report) -> dict[str, int]:
    """Return *report*'s counts by kind: each drift kind, then anomalies, legacy duplicate
    keys and detached rows."""
    counts = {k: report.counts[k] for k in DRIFT_KINDS}
    counts["anomalies"] = len(report.anomalies)
    counts["legacy_duplicates"] = len(report.duplicates)
    counts["detached"] = len(report.detached)
    return counts


def record_findings(
    conn: psycopg.Connection[Any], report: Report, *, job: str | None = None
) -> None:
    """Store the counts of *report* (a verify of *job*, or of the whole database when None)
    where ``beaconsql serve``'s ``/metrics`` reads the last run's findings."""
    conn.execute(
        _queries()["record_run"],
        {
            "job": job,
            "examined": report.examined,
            "counts": Jsonb(finding_counts(report)),
            "exit_code": report.exit_code,
        },
    )
