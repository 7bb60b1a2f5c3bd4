"""`make bench` / `python -m bench [scenario ...]`: run the benchmarks, print the ratios, write
bench/results.json. Scenarios: write, backfill, scaling, portal, serve (default: all)."""

from __future__ import annotations

import sys
import time

import psycopg

from bench import harness, scenarios

SCENARIOS = {
    "write": scenarios.record_run,
    "backfill": scenarios.backfill_ceiling,
    "scaling": scenarios.backfill_scaling,
    "portal": scenarios.portal_read,
    "serve": scenarios.serve_load,
}


def main(argv: list[str]) -> int:
    chosen = argv or list(SCENARIOS)
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}", file=sys.stderr)
        return 2
    server, described = harness.server_dsn()
    results = harness.Results(server=described)
    with psycopg.connect(server, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        results.postgres = str(row[0]) if row else ""
    print(f"beaconsql benchmarks on {described} (PostgreSQL {results.postgres})", flush=True)
    started = time.perf_counter()
    for name in chosen:
        t = time.perf_counter()
        print(f"- {name}", flush=True)
        SCENARIOS[name](server, results)
        print(f"  ({time.perf_counter() - t:.0f}s)", flush=True)
    results.figure("bench_total_seconds", time.perf_counter() - started, "s")
    results.write()
    width = max(len(k) for k in results.ratios) if results.ratios else 10
    print("\nratio".ljust(width + 1), "value   target")
    for name, value in results.ratios.items():
        print(name.ljust(width), f"{value:<7.3f}", results.targets[name])
    print(f"\nwritten to {harness.RESULTS.relative_to(harness.HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
