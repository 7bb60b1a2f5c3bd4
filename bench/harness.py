"""What every benchmark shares: the scratch server and databases, interleaved rounds with
medians, and bench/results.json. Absolute times are reported, never asserted."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from beaconsql import db, demo, migration, portal
from beaconsql.sqlfiles import parse_named_queries

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"


def server_dsn() -> tuple[str, str]:
    """Return (DSN of a maintenance database, description): BEACONSQL_BENCH_DSN, else the
    embedded server."""
    dsn = os.environ.get("BEACONSQL_BENCH_DSN", "").strip()
    if dsn:
        return dsn, db.redact_dsn(dsn)
    from beaconsql import embedded

    server = embedded.start(db.resolve_embedded_data_dir())
    return server.dsn("postgres"), f"embedded PostgreSQL {server.version}"


def scratch_database(server: str, name: str) -> str:
    """Create database *name* afresh, migrated to head; return its DSN."""
    dsn = demo.create_database(server, name)
    migration.upgrade(dsn)
    return dsn


def queries() -> dict[str, str]:
    """The bench's own queries (bench/data.sql)."""
    return parse_named_queries((HERE / "data.sql").read_text(), source="bench/data.sql")


def portal_query(name: str = "executions") -> str:
    """A read of beaconsql.portal, as it runs it."""
    return portal.queries()[name]


def set_mirror_triggers(conn: psycopg.Connection[Any], enabled: bool) -> None:
    """Enable or disable beaconsql's triggers (the baseline runs without them)."""
    action = "ENABLE" if enabled else "DISABLE"
    rows = conn.execute(
        "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE t.tgname LIKE 'zz\\_mirror%' AND NOT t.tgisinternal"
    ).fetchall()
    for table, trigger in rows:
        conn.execute(f'ALTER TABLE public."{table}" {action} TRIGGER "{trigger}"')


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    elapsed: list[float] = []
    yield lambda: elapsed[0] if elapsed else time.perf_counter() - start
    elapsed.append(time.perf_counter() - start)


def median(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


@dataclass
class Results:
    """What `make bench` writes to bench/results.json."""

    server: str
    postgres: str = ""
    ratios: dict[str, float] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)

    def figure(self, name: str, value: float, unit: str, **extra: Any) -> None:
        self.figures[name] = {"median": round(value, 4), "unit": unit, **extra}

    def ratio(self, name: str, value: float, target: str) -> None:
        self.ratios[name] = round(value, 3)
        self.targets[name] = target
        print(f"  {name} = {value:.3f}  (target {target})", flush=True)

    def write(self) -> None:
        payload = {
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "memory_gib": _memory_gib(),
            },
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "postgres": self.postgres,
            "server": self.server,
            "ratios": self.ratios,
            "targets": self.targets,
            "figures": self.figures,
            "plans": self.plans,
        }
        RESULTS.write_text(json.dumps(payload, indent=2) + "\n")


def _memory_gib() -> float | None:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return round(pages / 2**30, 1)
