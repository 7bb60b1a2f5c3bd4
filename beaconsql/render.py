"""Human-readable output of the CLI (``--json`` prints the library's dicts instead).

Every function takes a rich Console and a library result; none reads the database.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from beaconsql import backfill, migration, portal, status, verify

if TYPE_CHECKING:
    from rich.progress import Progress

STATUS_MARKS = {
    "completed": "✓ completed",
    "failed": "✗ failed",
    "running": "… running",
    "pending": "· pending",
    "cancelled": "⊘ cancelled",
}


def say(console: Console, text: str) -> None:
    """Print one line of a report as it is: no wrapping (the terminal wraps it), so that a
    script reading the output gets whole lines."""
    console.print(text, soft_wrap=True)


def _short(text: object, width: int) -> str:
    value = "" if text is None else str(text).replace("\n", " ")
    return value if len(value) <= width else value[: width - 1] + "…"


def _answer(output: object) -> object:
    """The answer an output holds: its ``response``, else the output itself."""
    return output.get("response") if isinstance(output, dict) else output


@dataclass(frozen=True)
class Layout:
    """A table of rows that fits the terminal: its columns, the answer column, the column that
    goes altogether when the answer cannot keep a readable width, and what narrows after
    that, to how narrow (in order). The other columns never narrow: they are what a reader
    looks for."""

    columns: tuple[str, ...]
    answer: str
    dropped: str
    squeeze: tuple[tuple[str, int], ...]


ANSWER_WIDTH = 50
DERIVED_NOTE = "id —: derived by the view, not mirrored yet (run `beaconsql backfill`)"
_ANSWER_READABLE = 20
# A job's executions: id, region and status never narrow.
EXECUTIONS = Layout(
    ("id", "region", "model", "question", "status", "started", "answer / error"),
    answer="answer / error",
    dropped="started",
    squeeze=(("answer / error", 12), ("question", 10), ("model", 8)),
)
# Every job's executions: id, region and status never narrow either.
EXECUTION_LIST = Layout(
    ("id", "job", "region", "model", "status", "created", "answer"),
    answer="answer",
    dropped="created",
    squeeze=(("answer", 12), ("job", 16), ("model", 8)),
)


def _table_width(widths: dict[str, int]) -> int:
    """Width of a table of these column widths in rich's default box: a border left, right and
    between columns, one space of padding each side of a cell."""
    return sum(widths.values()) + 3 * len(widths) + 1


def _column_widths(width: int, rows: list[tuple[str, ...]], layout: Layout) -> dict[str, int]:
    """Fit *layout*'s table of *rows* into *width* columns: the answer narrows to a readable
    width, then the dropped column goes, then the squeezed columns narrow in turn."""
    need = {
        name: max(cell_len(name), *(cell_len(row[i]) for row in rows))
        for i, name in enumerate(layout.columns)
    }
    need[layout.answer] = min(need[layout.answer], ANSWER_WIDTH)
    answer = need[layout.answer]
    need[layout.answer] = max(
        min(answer, _ANSWER_READABLE), answer - max(0, _table_width(need) - width)
    )
    if _table_width(need) > width:
        del need[layout.dropped]
        need[layout.answer] = answer
    for name, floor in layout.squeeze:
        excess = _table_width(need) - width
        if excess > 0:
            need[name] = max(min(floor, need[name]), need[name] - excess)
    return need


def _fitted_table(
    console: Console, title: str, rows: list[tuple[str, ...]], layout: Layout
) -> None:
    widths = _column_widths(console.width, rows, layout)
    table = Table(title=title, title_justify="left")
    for name, width in widths.items():
        table.add_column(name, no_wrap=True, overflow="ellipsis", width=width)
    for row in rows:
        table.add_row(
            *(cell for name, cell in zip(layout.columns, row, strict=True) if name in widths)
        )
    console.print(table)


def executions(console: Console, jobspec_id: str, items: list[dict[str, Any]]) -> None:
    """Print the portal's executions of a job as a table that fits the console (at 80
    columns: id, region, model, question, status and the answer, cut short)."""
    if not items:
        console.print(f"No executions for {jobspec_id} (nothing recorded yet).")
        return
    rows: list[tuple[str, ...]] = []
    for item in items:
        answer = _answer(item.get("output"))
        rows.append(
            (
                "—" if item["id"] is None else str(item["id"]),
                str(item["region"]),
                str(item["model_id"]),
                str(item.get("question_id", "")),
                STATUS_MARKS.get(item["status"], str(item["status"])),
                str(item["started_at"]),
                _short(
                    answer if answer is not None else item.get("original_error", ""), ANSWER_WIDTH
                ),
            )
        )
    _fitted_table(console, f"{jobspec_id}: {len(items)} executions", rows, EXECUTIONS)
    if any(i["id"] is None for i in items):
        console.print(DERIVED_NOTE)


def _value(value: object) -> str:
    """A JSON value as one line: text as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def execution_list(console: Console, page: dict[str, Any]) -> None:
    """Print a page of ``GET /api/v1/executions`` (every job's rows, newest first) and where
    it stands in the total."""
    items, total, offset = page["executions"], page["total"], page["offset"]
    if not items:
        console.print(f"No executions on this page ({total} in all; offset {offset}).")
        return
    rows: list[tuple[str, ...]] = [
        (
            "—" if item["id"] is None else str(item["id"]),
            str(item["job_id"]),
            str(item["region"]),
            str(item["model_id"]),
            STATUS_MARKS.get(item["status"], str(item["status"])),
            str(item["created_at"]),
            _short(_answer(item.get("output")), ANSWER_WIDTH),
        )
        for item in items
    ]
    title = f"executions {offset + 1}-{offset + len(items)} of {total}, newest first"
    _fitted_table(console, title, rows, EXECUTION_LIST)
    if any(i["id"] is None for i in items):
        console.print(DERIVED_NOTE)
    if offset + len(items) < total:
        say(console, f"next page: --offset {offset + len(items)}")


def execution(console: Console, row: portal.ExecutionRow) -> None:
    """Print one execution: who ran it, its times, its answer (or error), its bias score and
    its receipt's id."""
    output = portal.decode_json(row.output_json)
    receipt = portal.decode_json(row.receipt_json)
    bias = output.get("bias_score") if isinstance(output, dict) else None
    shown = "—" if row.execution_id is None else str(row.execution_id)
    say(console, f"execution {shown} of {row.jobspec_id or '(no job)'} ({row.source} row)")
    lines = [
        ("status", STATUS_MARKS.get(str(row.status), str(row.status))),
        ("region", f"{row.region} ({row.provider_id or 'no provider'})"),
        ("model", row.model_id or portal.DEFAULT_MODEL),
        ("question", row.question_id or "(none)"),
        ("started", portal.rfc3339(row.started_at) or "—"),
        ("completed", portal.rfc3339(row.completed_at) or "—"),
        ("duration", "—" if row.duration_ms is None else f"{row.duration_ms} ms"),
        ("classification", row.response_classification or "unknown"),
        ("retries", f"{row.retry_count or 0} of {row.max_retries}"),
    ]
    if row.original_error:
        lines.append(("error", row.original_error))
    if isinstance(bias, dict):
        lines.append(("bias score", ", ".join(f"{k} {_value(v)}" for k, v in bias.items())))
    else:
        lines.append(("bias score", "none" if bias is None else _value(bias)))
    receipt_id = receipt.get("id") if isinstance(receipt, dict) else None
    lines.append(("receipt", "none" if receipt is None else str(receipt_id or "(no id)")))
    for name, value in lines:
        say(console, f"  {name:<15} {value}")
    answer = _answer(output)
    if answer is not None:
        say(console, "  answer:")
        text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
        for line in text.splitlines() or [""]:
            say(console, f"    {line}")


def bias_score(console: Console, score: dict[str, Any]) -> None:
    """Print ``GET /api/v1/executions/{id}/bias-score``: one metric a line."""
    say(console, f"bias score of execution {score['execution_id']}:")
    metrics = score["bias_metrics"]
    if isinstance(metrics, dict):
        for name, value in metrics.items():
            say(console, f"  {name:<22} {_value(value)}")
    else:
        say(console, f"  {_value(metrics)}")


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
    if not s.schema.agrees:
        say(console, f"stamp and objects disagree: {s.schema.describe()}")
    if s.schema.objects is None:
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


def _revision_lines(console: Console, verb: str, revisions: list[migration.Revision]) -> None:
    for r in revisions:
        say(console, f"  {verb} {r.id}: {r.summary}")


def _created_summary(created: list[tuple[str, str]]) -> str:
    """'6 tables (jobs, …), 30 indexes, …' for what an upgrade created on an empty database."""
    kinds = Counter(kind for kind, _ in created)
    tables = [name for kind, name in created if kind == "table"]
    parts = [f"{len(tables)} tables ({', '.join(tables)})"] if tables else []
    plural = {"index": "indexes"}
    parts += [
        f"{n} {kind if n == 1 else plural.get(kind, kind + 's')}"
        for kind, n in kinds.items()
        if kind != "table"
    ]
    return ", ".join(parts)


def upgrade_report(console: Console, r: migration.UpgradeResult) -> None:
    """Print what ``beaconsql upgrade`` did: a re-stamp, the baseline's adoption (tables
    verified, each column and object added) or creation, the revisions run, the move."""
    if r.restamped_from is not None:
        held = (
            f"held the objects of {r.started_from} only; ran the revisions after it again"
            if r.started_from
            else "held none of beaconsql's objects; ran every revision"
        )
        say(console, f"re-stamped: the database was stamped at {r.restamped_from} but {held}")
    b = r.baseline
    if b is not None and b.adopted:
        say(console, "adopted the runner's database (its rows untouched)")
        say(console, f"  verified tables: {', '.join(b.verified)}")
        for column in b.added_columns:
            say(console, f"  added column {column}")
        for kind, name in b.created:
            say(console, f"  created {kind} {name}")
        if not b.added_columns and not b.created:
            say(console, "  nothing was missing: no column or object added")
    elif b is not None:
        say(console, "created the runner's schema (an empty database)")
        say(console, f"  created {_created_summary(b.created)}")
    _revision_lines(console, "ran", r.applied)
    if r.applied:
        say(console, f"upgraded {r.started_from or 'an unmigrated database'} -> {r.after}")
    else:
        say(console, f"already at revision {r.after}")


def downgrade_report(console: Console, r: migration.UpgradeResult) -> None:
    """Print what ``beaconsql downgrade`` undid."""
    _revision_lines(console, "undid", r.applied)
    if r.applied:
        say(console, f"downgraded {r.before} -> {r.after or 'base (nothing of beaconsql left)'}")
    else:
        say(console, f"already at revision {r.after or 'base'}")


def history(console: Console, revisions: list[migration.Revision]) -> None:
    """Print the revisions newest first, as ``alembic history`` does, marking the head."""
    head = revisions[-1].id if revisions else None
    for r in reversed(revisions):
        mark = " (head)" if r.id == head else ""
        say(console, f"{r.down_revision or 'base'} -> {r.id}{mark}, {r.summary}")


class BackfillBar:
    """The backfill's progress bar on a terminal: done/total, percent and time left.

    Shown from the first callback (when the run knows its total, from the high-water mark),
    not while it is still preparing. The time left is the average rate since then applied to
    what remains, so it shows from the first batch on (rich's own estimate needs two).
    *get_time* (seconds) is for tests.
    """

    def __init__(self, console: Console, *, get_time: Callable[[], float] | None = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            ProgressColumn,
            Task,
            TaskProgressColumn,
            TextColumn,
        )
        from rich.progress import Progress as RichProgress
        from rich.text import Text

        class TimeLeft(ProgressColumn):
            def render(self, task: Task) -> Text:
                if task.finished:
                    return Text("done")
                if not task.total or not task.completed or not task.elapsed:
                    return Text("ETA -:--:--")
                left = task.elapsed * (task.total - task.completed) / task.completed
                return Text(f"ETA {timedelta(seconds=round(left))}")

        self.progress: Progress = RichProgress(
            TextColumn("backfill"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeLeft(),
            console=console,
            get_time=get_time,
        )
        self.task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("backfill", total=total)
        self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        self.progress.stop()
