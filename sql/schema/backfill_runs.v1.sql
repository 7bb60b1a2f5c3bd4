-- Backfill runs (revision 0004). Read by migrations/versions/0004_backfill_runs.py; written by
-- `beaconsql backfill` (beaconsql/backfill.py), read by `beaconsql status`.
-- One row per run: its scope, its high-water mark (the largest region result id when it
-- started: later rows are the triggers'), its keyset cursor and counts, saved in the same
-- transaction as each batch, so that an interrupted run resumes where it stopped. The run
-- whose status is 'running' holds the single-runner lease (lease_*, heartbeat_at): renewed by
-- each batch, taken over by the next run once it expired (docs/operations.md, "Poolers").
CREATE TABLE IF NOT EXISTS public.region_results_backfill_runs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'interrupted', 'completed', 'failed')),
    scope_job       text,
    scope_since     timestamptz,
    high_water_mark uuid,
    cursor          uuid,
    phase           text NOT NULL DEFAULT 'region_results'
                    CHECK (phase IN ('region_results', 'orphans', 'done')),
    batches         bigint NOT NULL DEFAULT 0,
    examined        bigint NOT NULL DEFAULT 0,
    inserted        bigint NOT NULL DEFAULT 0,
    updated         bigint NOT NULL DEFAULT 0,
    deleted         bigint NOT NULL DEFAULT 0,
    detached        bigint NOT NULL DEFAULT 0,
    left_to_direct  bigint NOT NULL DEFAULT 0,
    anomalies       bigint NOT NULL DEFAULT 0,
    states          bigint NOT NULL DEFAULT 0,
    deferred        bigint NOT NULL DEFAULT 0,
    max_batch_rows  bigint NOT NULL DEFAULT 0,
    last_error      text,
    -- The lease: who holds it (a token per run process; its host, pid and application; its
    -- server session when connected directly, to see at once that it ended), its heartbeat.
    lease_token     uuid,
    lease_host      text,
    lease_pid       bigint,
    lease_application text,
    lease_backend_pid bigint,
    lease_backend_start timestamptz,
    lease_taken_at  timestamptz,
    heartbeat_at    timestamptz,
    lease_expires_at timestamptz,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
-- At most one run holds the lease: a second runner's INSERT or UPDATE to 'running' fails.
-- The table is created just above, empty: no CONCURRENTLY needed.
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX IF NOT EXISTS region_results_backfill_runs_one_running
    ON public.region_results_backfill_runs ((true)) WHERE status = 'running';
COMMENT ON TABLE public.region_results_backfill_runs IS
    'beaconsql: backfill runs, with the cursor and counts of each, for resuming and for status';
