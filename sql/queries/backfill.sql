-- Queries of `beaconsql backfill` (beaconsql/backfill.py): keyset batches over region_results
-- up to a high-water mark, each applied with region_results_mirror_apply (the same function the
-- triggers use), the run's cursor and counts saved in the same transaction.
-- Parameters are psycopg named placeholders; no literal percent signs here.

-- name: lease_holder
-- The run holding the single-runner lease (the one 'running' run, if any), and whether its
-- lease lapsed: it expired (no heartbeat in time: the process was killed, or hangs), or its
-- holder connected directly and that server session has ended (a killed process, a lost
-- connection: no need to wait for the expiry). Through a pooler only the expiry tells.
SELECT r.id, r.lease_token, r.lease_host, r.lease_pid, r.lease_application, r.lease_taken_at,
       r.heartbeat_at, r.lease_expires_at,
       extract(epoch FROM clock_timestamp() - r.heartbeat_at)::float8 AS heartbeat_age_seconds,
       coalesce(r.lease_expires_at < clock_timestamp(), true)
       OR (r.lease_backend_pid IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM pg_catalog.pg_stat_activity a
               WHERE a.pid = r.lease_backend_pid
                 AND (a.backend_start IS NULL OR a.backend_start = r.lease_backend_start)))
       AS lapsed
FROM public.region_results_backfill_runs r
WHERE r.status = 'running';

-- name: reclaim_lease
-- A lapsed lease ends: its run becomes 'interrupted' (resumable). Only if it is still the
-- lease that was seen lapsed (same holder, no heartbeat since): a heartbeat in between wins.
UPDATE public.region_results_backfill_runs
SET status = 'interrupted', updated_at = now()
WHERE id = %(run_id)s AND status = 'running'
  AND lease_token = %(token)s AND heartbeat_at = %(heartbeat_at)s
RETURNING id;

-- name: resume_run
-- Take the lease on the newest unfinished run of the same scope, to resume it: its process
-- was stopped, failed (disk full, a timeout: its cursor is that of its last saved batch, so
-- nothing is half-done), or died (its lapsed lease was just reclaimed).
UPDATE public.region_results_backfill_runs r
SET status = 'running', lease_token = %(token)s, lease_host = %(host)s, lease_pid = %(pid)s,
    lease_application = nullif(current_setting('application_name'), ''),
    lease_backend_pid = CASE WHEN %(direct)s THEN pg_backend_pid() END,
    lease_backend_start = CASE WHEN %(direct)s THEN (
        SELECT a.backend_start FROM pg_catalog.pg_stat_activity a
        WHERE a.pid = pg_backend_pid()) END,
    lease_taken_at = clock_timestamp(), heartbeat_at = clock_timestamp(),
    lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_seconds)s),
    updated_at = now()
WHERE r.id = (SELECT o.id FROM public.region_results_backfill_runs o
              WHERE o.status IN ('interrupted', 'failed')
                AND o.scope_job IS NOT DISTINCT FROM %(job)s
                AND o.scope_since IS NOT DISTINCT FROM %(since)s
              ORDER BY o.id DESC
              LIMIT 1)
  AND r.status IN ('interrupted', 'failed')
RETURNING r.id, r.high_water_mark, r.cursor, r.phase, r.batches, r.examined, r.inserted,
          r.updated, r.deleted, r.detached, r.left_to_direct, r.anomalies, r.states,
          r.deferred, r.max_batch_rows;

-- name: high_water_mark
-- The largest region result id in scope now that the triggers are in place: rows added later
-- are mirrored by the triggers, so the run stops here and always terminates.
SELECT r.id
FROM public.region_results r
WHERE (%(job)s::text IS NULL OR r.cross_region_execution_id IN (
           SELECT x.id FROM public.cross_region_executions x WHERE x.jobspec_id = %(job)s))
  AND (%(since)s::timestamptz IS NULL OR r.updated_at >= %(since)s)
ORDER BY r.id DESC
LIMIT 1;

-- name: start_run
-- A new run, holding the lease (status 'running'): fails on the unique index
-- region_results_backfill_runs_one_running while another run holds it.
INSERT INTO public.region_results_backfill_runs (
    scope_job, scope_since, high_water_mark, lease_token, lease_host, lease_pid,
    lease_application, lease_backend_pid, lease_backend_start, lease_taken_at, heartbeat_at,
    lease_expires_at)
VALUES (%(job)s, %(since)s, %(high_water_mark)s, %(token)s, %(host)s, %(pid)s,
        nullif(current_setting('application_name'), ''),
        CASE WHEN %(direct)s THEN pg_backend_pid() END,
        CASE WHEN %(direct)s THEN (SELECT a.backend_start FROM pg_catalog.pg_stat_activity a
                                   WHERE a.pid = pg_backend_pid()) END,
        clock_timestamp(), clock_timestamp(),
        clock_timestamp() + make_interval(secs => %(lease_seconds)s))
RETURNING id, high_water_mark, cursor, phase, batches, examined, inserted, updated, deleted,
          detached, left_to_direct, anomalies, states, deferred, max_batch_rows;

-- name: heartbeat
-- Renew the lease, if this run still holds it (no row: another run took it over).
UPDATE public.region_results_backfill_runs
SET heartbeat_at = clock_timestamp(),
    lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_seconds)s)
WHERE id = %(run_id)s AND status = 'running' AND lease_token = %(token)s
RETURNING id;

-- name: count_in_scope
-- How many region results the run has to examine after the cursor (for the progress bar).
SELECT count(*)
FROM public.region_results r
WHERE r.id > %(cursor)s AND r.id <= %(high_water_mark)s
  AND (%(job)s::text IS NULL OR r.cross_region_execution_id IN (
           SELECT x.id FROM public.cross_region_executions x WHERE x.jobspec_id = %(job)s))
  AND (%(since)s::timestamptz IS NULL OR r.updated_at >= %(since)s);

-- name: next_batch
-- The next keyset batch: ids after the cursor, up to the high-water mark, in id order.
SELECT r.id
FROM public.region_results r
WHERE r.id > %(cursor)s AND r.id <= %(high_water_mark)s
  AND (%(job)s::text IS NULL OR r.cross_region_execution_id IN (
           SELECT x.id FROM public.cross_region_executions x WHERE x.jobspec_id = %(job)s))
  AND (%(since)s::timestamptz IS NULL OR r.updated_at >= %(since)s)
ORDER BY r.id
LIMIT %(batch_size)s;

-- name: next_orphans
-- Region results that no longer exist but left mirrored rows or a mirror state behind
-- (deleted while triggers were skipped), after the cursor, in id order. With a job, only rows
-- of that job (through their job or run): a state alone no longer says which job it was.
SELECT o.id
FROM (SELECT e.mirror_region_result_id AS id FROM public.executions e
      LEFT JOIN public.jobs j ON j.id = e.job_id
      LEFT JOIN public.cross_region_executions x ON x.id = e.cross_region_execution_id
      WHERE e.mirror_region_result_id > %(cursor)s
        AND NOT EXISTS (SELECT 1 FROM public.region_results r WHERE r.id = e.mirror_region_result_id)
        AND (%(job)s::text IS NULL OR j.jobspec_id = %(job)s OR x.jobspec_id = %(job)s)
      UNION
      SELECT s.region_result_id FROM public.region_results_mirror_state s
      WHERE %(job)s::text IS NULL
        AND s.region_result_id > %(cursor)s
        AND NOT EXISTS (SELECT 1 FROM public.region_results r WHERE r.id = s.region_result_id)) o
ORDER BY o.id
LIMIT %(batch_size)s;

-- name: apply
SELECT inserted, updated, deleted, detached, left_to_direct, anomalies, states, deferred
FROM public.region_results_mirror_apply(%(ids)s::uuid[], dry_run => %(dry_run)s);

-- name: batch_timeouts
-- The batch transaction's timeouts (transaction-scoped: nothing stays on a pooled session).
SELECT set_config('lock_timeout', %(lock_timeout)s, true),
       set_config('statement_timeout', %(statement_timeout)s, true);

-- name: save_progress
-- The batch's cursor and counts, and a heartbeat, in the batch's transaction; no row when this
-- run no longer holds the lease (the batch is then rolled back).
UPDATE public.region_results_backfill_runs
SET cursor = %(cursor)s, phase = %(phase)s, batches = batches + 1,
    examined = examined + %(examined)s, inserted = inserted + %(inserted)s,
    updated = updated + %(updated)s, deleted = deleted + %(deleted)s,
    detached = detached + %(detached)s, left_to_direct = left_to_direct + %(left_to_direct)s,
    anomalies = anomalies + %(anomalies)s, states = states + %(states)s,
    deferred = deferred + %(deferred)s,
    max_batch_rows = greatest(max_batch_rows, %(batch_rows)s), updated_at = now(),
    heartbeat_at = clock_timestamp(),
    lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_seconds)s)
WHERE id = %(run_id)s AND status = 'running' AND lease_token = %(token)s
RETURNING id;

-- name: set_phase
UPDATE public.region_results_backfill_runs
SET phase = %(phase)s, cursor = NULL, updated_at = now()
WHERE id = %(run_id)s AND status = 'running' AND lease_token = %(token)s
RETURNING id;

-- name: finish_run
-- A completed run clears its cursor (the next run rescans everything) and ends its lease.
UPDATE public.region_results_backfill_runs
SET status = 'completed', phase = 'done', cursor = NULL, finished_at = now(), updated_at = now()
WHERE id = %(run_id)s AND status = 'running' AND lease_token = %(token)s
RETURNING id;

-- name: stop_run
-- An interrupted or failed run ends its lease; resumable from its cursor.
UPDATE public.region_results_backfill_runs
SET status = %(status)s, last_error = %(error)s, updated_at = now()
WHERE id = %(run_id)s AND status = 'running' AND lease_token = %(token)s
RETURNING id;

-- name: last_runs
-- For `beaconsql status`: the last completed run and the newest unfinished one, if any (a
-- 'running' one is running only while its lease has not lapsed: see lease_holder).
SELECT (SELECT to_jsonb(c) FROM (SELECT id, scope_job, scope_since, started_at, finished_at,
                                        examined, inserted, updated, deleted, detached
                                 FROM public.region_results_backfill_runs
                                 WHERE status = 'completed' ORDER BY id DESC LIMIT 1) c) AS last_completed,
       (SELECT to_jsonb(o) FROM (SELECT id, status, scope_job, scope_since, phase, cursor,
                                        high_water_mark, examined, started_at, updated_at, last_error,
                                        lease_host, lease_pid, lease_application, heartbeat_at,
                                        lease_expires_at
                                 FROM public.region_results_backfill_runs
                                 WHERE status IN ('running', 'interrupted', 'failed')
                                 ORDER BY id DESC LIMIT 1) o) AS open_run;

-- name: never_analyzed
-- Tables the mirror's cached plans depend on that have no statistics yet (a database loaded
-- in bulk): without them the planner guesses, and a generic plan may scan whole tables.
SELECT relname
FROM pg_catalog.pg_stat_user_tables
WHERE schemaname = 'public'
  AND relname IN ('executions', 'region_results', 'cross_region_executions', 'jobs',
                  'region_results_mirror_state')
  AND last_analyze IS NULL AND last_autoanalyze IS NULL
ORDER BY relname;

-- name: executions_size
-- The planner's count of executions rows (pg_class.reltuples; -1 when never analyzed).
SELECT greatest(c.reltuples, 0)::bigint
FROM pg_catalog.pg_class c
WHERE c.oid = 'public.executions'::regclass;

-- name: analyze_mirrored
-- Fresh statistics for the tables a backfill fills (see beaconsql/backfill.py, _keep_statistics).
ANALYZE public.executions, public.region_results_mirror_state;
