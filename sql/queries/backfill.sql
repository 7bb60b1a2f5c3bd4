-- Queries of `beaconsql backfill` (beaconsql/backfill.py): keyset batches over region_results
-- up to a high-water mark, each applied with region_results_mirror_apply (the same function the
-- triggers use), the run's cursor and counts saved in the same transaction.
-- Parameters are psycopg named placeholders; no literal percent signs here.

-- name: open_run
-- An unfinished run of the same scope, to resume: its process died, was stopped, or failed
-- (disk full, a timeout: its cursor is that of its last saved batch, so nothing is half-done).
SELECT id, high_water_mark, cursor, phase, batches, examined, inserted, updated, deleted,
       detached, left_to_direct, anomalies, states, deferred, max_batch_rows
FROM public.region_results_backfill_runs
WHERE status IN ('running', 'interrupted', 'failed')
  AND scope_job IS NOT DISTINCT FROM %(job)s
  AND scope_since IS NOT DISTINCT FROM %(since)s
ORDER BY id DESC
LIMIT 1;

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
INSERT INTO public.region_results_backfill_runs (scope_job, scope_since, high_water_mark)
VALUES (%(job)s, %(since)s, %(high_water_mark)s)
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

-- name: save_progress
UPDATE public.region_results_backfill_runs
SET cursor = %(cursor)s, phase = %(phase)s, status = 'running', batches = batches + 1,
    examined = examined + %(examined)s, inserted = inserted + %(inserted)s,
    updated = updated + %(updated)s, deleted = deleted + %(deleted)s,
    detached = detached + %(detached)s, left_to_direct = left_to_direct + %(left_to_direct)s,
    anomalies = anomalies + %(anomalies)s, states = states + %(states)s,
    deferred = deferred + %(deferred)s,
    max_batch_rows = greatest(max_batch_rows, %(batch_rows)s), updated_at = now()
WHERE id = %(run_id)s;

-- name: set_phase
UPDATE public.region_results_backfill_runs
SET phase = %(phase)s, cursor = NULL, updated_at = now()
WHERE id = %(run_id)s;

-- name: finish_run
-- A completed run clears its cursor: the next run rescans everything.
UPDATE public.region_results_backfill_runs
SET status = 'completed', phase = 'done', cursor = NULL, finished_at = now(), updated_at = now()
WHERE id = %(run_id)s;

-- name: stop_run
UPDATE public.region_results_backfill_runs
SET status = %(status)s, last_error = %(error)s, updated_at = now()
WHERE id = %(run_id)s;

-- name: last_runs
-- For `beaconsql status`: the last completed run and the open (interrupted) one, if any.
SELECT (SELECT to_jsonb(c) FROM (SELECT id, scope_job, scope_since, started_at, finished_at,
                                        examined, inserted, updated, deleted, detached
                                 FROM public.region_results_backfill_runs
                                 WHERE status = 'completed' ORDER BY id DESC LIMIT 1) c) AS last_completed,
       (SELECT to_jsonb(o) FROM (SELECT id, status, scope_job, scope_since, phase, cursor,
                                        high_water_mark, examined, started_at, updated_at, last_error
                                 FROM public.region_results_backfill_runs
                                 WHERE status IN ('running', 'interrupted', 'failed')
                                 ORDER BY id DESC LIMIT 1) o) AS open_run;

-- name: lock_holder
-- Who holds the single-runner lock (a session-level advisory lock on BACKFILL_LOCK_KEY).
SELECT a.pid, a.application_name, a.client_addr::text, a.backend_start
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = %(key)s
LIMIT 1;

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
