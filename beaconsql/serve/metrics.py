"""``/metrics`` of `beaconsql serve`: the mirror's health read from the database at each
scrape (through ``serve_metrics()`` and ``serve_health()``, owner-rights functions the portal
role may execute), and the server's own request counts and latencies.

Database gauges (``beaconsql_`` prefix): ``database_up``, ``replay_lag_seconds`` (on a
standby), ``region_results_not_mirrored``, ``mirror_anomalies{kind}``,
``verify_findings{kind}`` and ``verify_last_run_timestamp_seconds`` (the last whole-database
``beaconsql verify``), ``backfill_running``, ``backfill_examined``,
``backfill_cursor_fraction`` (share of the key space the last backfill has passed),
``backfill_rate_per_second`` and ``backfill_last_update_timestamp_seconds``. The server's:
``serve_requests_total{route,status}``, ``serve_request_seconds{route}`` and
``serve_database_reads_total`` (fewer than the requests while answers are shared).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from beaconsql.errors import BeaconsqlError
from beaconsql.serve.reads import Reader
from beaconsql.sqlfiles import named_queries

logger = logging.getLogger(__name__)

PREFIX = "beaconsql_"
# Metrics with a label, and its name.
LABELS = {"mirror_anomalies": "kind", "verify_findings": "kind"}
HELP = {
    "region_results_not_mirrored": "Region results whose mirrored rows do not reflect them.",
    "mirror_anomalies": "Anomalies the mirror recorded, by kind.",
    "verify_findings": "Findings of the last whole-database beaconsql verify, by kind.",
    "verify_last_run_timestamp_seconds": "When the last whole-database verify ran.",
    "backfill_running": "1 while the last backfill run is running.",
    "backfill_examined": "Region results the last backfill run has examined.",
    "backfill_cursor_fraction": "Share of the region result key space the backfill passed.",
    "backfill_rate_per_second": "Region results examined per second by the last backfill.",
    "backfill_last_update_timestamp_seconds": "When the last backfill run last saved its cursor.",
}


def _rows(conn: psycopg.Connection[Any]) -> tuple[tuple[Any, ...] | None, list[tuple[Any, ...]]]:
    queries = named_queries("queries/serve.sql")
    health = conn.execute(queries["health"]).fetchone()
    return health, conn.execute(queries["metrics"]).fetchall()


class DatabaseCollector(Collector):
    """Read the database's gauges at each scrape; ``database_up`` 0 when that fails."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def collect(self) -> Iterator[Metric]:
        reads = CounterMetricFamily(
            PREFIX + "serve_database_reads",
            "Read transactions serve started (retries included; shared answers are not reads).",
        )
        reads.add_metric([], self.reader.attempts)
        yield reads
        up = GaugeMetricFamily(PREFIX + "database_up", "1 when serve could read the database.")
        try:
            health, rows = self.reader.read(_rows)
        except (BeaconsqlError, psycopg.Error) as exc:
            logger.warning("metrics: database not read (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        if health is not None and health[2] is not None:
            lag = GaugeMetricFamily(
                PREFIX + "replay_lag_seconds", "Seconds since the standby last replayed a commit."
            )
            lag.add_metric([], float(health[2]))
            yield lag
        families: dict[str, GaugeMetricFamily] = {}
        for metric, label, value in rows:
            family = families.get(metric)
            if family is None:
                labels = [LABELS[metric]] if metric in LABELS else []
                family = families[metric] = GaugeMetricFamily(
                    PREFIX + metric, HELP.get(metric, metric), labels=labels
                )
            family.add_metric([label] if metric in LABELS else [], float(value))
        yield from families.values()


class Metrics:
    """The server's registry: the database collector plus request counts and latencies."""

    def __init__(self, reader: Reader) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(DatabaseCollector(reader))
        self.requests = Counter(
            PREFIX + "serve_requests",
            "Requests answered, by route and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            PREFIX + "serve_request_seconds",
            "Time to answer a request, by route.",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)
