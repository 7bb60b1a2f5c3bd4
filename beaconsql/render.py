"""Human-readable output of the CLI (``--json`` prints the library's dicts instead).

Every function takes a rich Console and a library result; none reads the database.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from beaconsql import backfill, portal, status, verify

STATUS_MARKS = {
    "completed": "✓ completed",
    "failed": "✗ failed",
    "running": "… running",
    "pending": "· pending",
    "cancelled": "⊘ cancelled",
}


def _short(text: object, width: int) -> str:
    value = "" if text is None else str(text).replace("\n", " ")
    return value if len(value) <= width else value[: width - 1] + "…"


def executions(console: Console, jobspec_id: str, items: list[dict[str, Any]]) -> None:
    """Print the portal's executions of a job as a table."""
    if not items:
        console.print(f"No executions for {jobspec_id} (unknown job, or nothing recorded yet).")
        return
    table = Table(title=f"{jobspec_id}: {len(items)} executions", title_justify="left")
    for column in ("id", "region", "model", "question", "status", "started"):
        table.add_column(column, no_wrap=True)
    table.add_column("answer / error", overflow="ellipsis", no_wrap=True, max_width=50)
    for item in items:
        output = item.get("output")
        answer = output.get("response") if isinstance(output, dict) else output
        table.add_row(
            "—" if item["id"] is None else str(item["id"]),
            item["region"],
            item["model_id"],
            item.get("question_id", ""),
            STATUS_MARKS.get(item["status"], item["status"]),
            item["started_at"],
            _short(answer if answer is not None else item.get("original_error", ""), 50),
        )
    console.print(table)
    if any(i["id"] is None for i in items):
        console.print("id —: derived by the view, not mirrored yet (run `beaconsql backfill`)")


def progress(console: Console, p: portal.Progress) -> None:
    """Print a job's progress: a region × model by question grid and per-dimension tallies."""
    if not p.grid and p.job_status is None:
        console.print(f"No job {p.jobspec_id}.")
        return
    console.print(
        f"{p.jobspec_id}: job status {p.job_status or '(no jobs row)'}: "
        f"{p.overall.done}/{p.overall.expected} done ({p.overall.percent_done}%), "
        f"{p.overall.percent_completed}% completed"
    )
    grid = Table(title="statuses", title_justify="left")
    grid.add_column("region")
    grid.add_column("model")
    for question in p.questions:
        grid.add_column(question or "(none)")
    cells = {(r, m, q): s for r, m, q, s in p.grid}
    for region in p.regions:
        for model in p.models:
            grid.add_row(
                region,
                model,
                *(STATUS_MARKS.get(cells.get((region, model, q), ""), "") for q in p.questions),
            )
    console.print(grid)
    tallies = Table(title="progress", title_justify="left")
    for column in ("dimension", "value", "done", "expected", "% done", "% completed"):
        tallies.add_column(column)
    for dimension, part in (
        ("region", p.by_region),
        ("model", p.by_model),
        ("question", p.by_question),
    ):
        for name, tally in part.items():
            tallies.add_row(
                dimension,
                name or "(none)",
                str(tally.done),
                str(tally.expected),
                f"{tally.percent_done}",
                f"{tally.percent_completed}",
            )
    console.print(tallies)


def status_report(console: Console, s: status.Status) -> None:
    """Print ``beaconsql status``."""
    rev = s.revision or "none (never migrated)"
    console.print(
        f"revision: {rev} (head {s.head}){'' if s.up_to_date else ' — run `beaconsql upgrade`'}"
    )
    if s.revision is None:
        return
    if s.triggers:
        state = "active" if s.mirror_active else "NOT active"
        console.print(f"mirror triggers: {state}")
        for t in s.triggers:
            console.print(f"  {t.table}.{t.trigger}: {t.state}")
    else:
        console.print("mirror triggers: not installed")
    console.print(f"region_results: {s.region_results}, executions: {s.executions}")
    if s.mirror:
        m = s.mirror
        console.print(
            f"executions rows: {m['direct']} direct, {m['mirrored']} mirrored, "
            f"{m['detached']} detached"
        )
        console.print(
            f"region results not mirrored: {m['not_mirrored']}; deleted while triggers were "
            f"skipped: {m['deleted_unmirrored']}; anomalies recorded: {m['anomalies']}"
        )
    if s.backfill is not None:
        done, open_run = s.backfill["last_completed"], s.backfill["unfinished"]
        console.print(
            "backfill: last completed run "
            + (f"#{done['id']} finished {done['finished_at']}" if done else "none")
        )
        if open_run and open_run["status"] == "running":
            holder = ", ".join(
                f"{key} {open_run[f'lease_{key}']}"
                for key in ("host", "pid", "application")
                if open_run.get(f"lease_{key}") is not None
            )
            console.print(
                f"backfill: run #{open_run['id']} running at {open_run['phase']} cursor "
                f"{open_run['cursor']} ({holder}; last heartbeat {open_run['heartbeat_at']}, "
                f"lease until {open_run['lease_expires_at']} unless renewed)"
            )
        elif open_run:
            console.print(
                f"backfill: run #{open_run['id']} {open_run['status']} at {open_run['phase']} "
                f"cursor {open_run['cursor']} (rerun `beaconsql backfill` to resume)"
            )


def backfill_summary(console: Console, s: backfill.Summary) -> None:
    """Print a backfill's summary."""
    verb = "would change" if s.dry_run else "changed"
    head = "dry run: " if s.dry_run else ("" if s.complete else "stopped early: ")
    console.print(
        f"{head}{s.examined} region results examined in {s.batches} batches"
        f"{' (resumed run)' if s.resumed else ''}; executions rows {verb}: "
        f"{s.inserted} inserted, {s.updated} updated, {s.deleted} deleted, {s.detached} detached; "
        f"{s.left_to_direct} keys left to direct rows; {s.anomalies} new anomalies; "
        f"{s.elapsed_seconds}s"
    )


def verify_report(console: Console, r: verify.Report) -> None:
    """Print verify's findings, drift first."""
    verdict = "DRIFT" if r.has_drift else "no drift"
    console.print(f"{verdict}: {r.examined} region results examined")
    for kind in verify.DRIFT_KINDS:
        if r.counts[kind]:
            console.print(f"  {kind}: {r.counts[kind]}")
    for f in r.drift:
        console.print(
            f"  - {f.kind}: region result {f.region_result_id}"
            f"{'' if f.execution_id is None else f', executions row {f.execution_id}'}"
            f"{'' if f.jobspec_id is None else f' ({f.jobspec_id})'}: {f.detail}"
        )
    if r.has_drift:
        console.print("  next step: `beaconsql backfill` repairs all of these.")
    console.print(f"anomalies recorded (reported only): {len(r.anomalies)}")
    for a in r.anomalies[:20]:
        console.print(f"  - {a['kind']} ({a['jobspec_id']}): {a['detail']}")
    console.print(f"legacy duplicate direct rows hidden by the view: {len(r.duplicates)} keys")
    for d in r.duplicates[:20]:
        console.print(
            f"  - {d['jobspec_id']} {d['region']} {d['model_id']} {d['question_id']}: "
            f"{d['rows']} rows {d['execution_ids']}"
        )
    console.print(f"detached rows (now direct): {len(r.detached)}")
