-- serve_health, serve_metrics, serve_job_known (revision 0005): what `beaconsql serve` reads
-- beyond the view, with the owner's rights, so that serve needs nothing but the portal role
-- (`beaconsql grant` gives it EXECUTE; PUBLIC has none). Read-only: they run on a standby.
-- Bodies are strings (no dependency recorded): the mirror's objects they read may be replaced.

-- The revision the database is at, whether it is a standby, and how far behind it replays.
CREATE OR REPLACE FUNCTION public.serve_health()
RETURNS TABLE (revision text, in_recovery boolean, replay_lag_seconds double precision,
               system_identifier text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT (SELECT v.version_num::text FROM public.alembic_version v LIMIT 1),
       pg_catalog.pg_is_in_recovery(),
       CASE WHEN pg_catalog.pg_is_in_recovery()
            THEN extract(epoch FROM pg_catalog.now() - pg_catalog.pg_last_xact_replay_timestamp())::double precision
       END,
       (SELECT c.system_identifier::text FROM pg_catalog.pg_control_system() c)
$$;

-- Gauges for /metrics, one row per sample: (metric, label, value). label is '' when none.
CREATE OR REPLACE FUNCTION public.serve_metrics()
RETURNS TABLE (metric text, label text, value double precision)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT 'region_results_not_mirrored', '', count(*)::double precision
FROM public.region_results_mirror_inputs i WHERE NOT i.mirrored
UNION ALL
SELECT 'mirror_anomalies', a.kind::text, count(*)::double precision
FROM public.region_results_mirror_anomalies a GROUP BY a.kind
UNION ALL
SELECT 'verify_findings', f.key, f.value::double precision
FROM (SELECT v.counts FROM public.region_results_verify_runs v
      WHERE v.scope_job IS NULL ORDER BY v.id DESC LIMIT 1) last_run,
     jsonb_each_text(last_run.counts) f
UNION ALL
SELECT 'verify_last_run_timestamp_seconds', '', extract(epoch FROM v.finished_at)::double precision
FROM (SELECT finished_at FROM public.region_results_verify_runs
      WHERE scope_job IS NULL ORDER BY id DESC LIMIT 1) v
UNION ALL
SELECT m.metric, '', m.value
FROM (SELECT b.* FROM public.region_results_backfill_runs b ORDER BY b.id DESC LIMIT 1) b
CROSS JOIN LATERAL (VALUES
    ('backfill_running', CASE WHEN b.status = 'running' THEN 1 ELSE 0 END::double precision),
    ('backfill_examined', b.examined::double precision),
    -- Region result ids are random UUIDs visited in key order: the cursor's place in the key
    -- space is the share of the scan done.
    ('backfill_cursor_fraction',
     CASE WHEN b.phase = 'done' OR b.status = 'completed' THEN 1
          WHEN b.cursor IS NULL THEN 0
          ELSE ('x' || substr(replace(b.cursor::text, '-', ''), 1, 12))::bit(48)::bigint
               / 281474976710656.0 END::double precision),
    ('backfill_rate_per_second',
     CASE WHEN coalesce(b.finished_at, b.updated_at) > b.started_at
          THEN b.examined / extract(epoch FROM coalesce(b.finished_at, b.updated_at) - b.started_at)
          ELSE 0 END::double precision),
    ('backfill_last_update_timestamp_seconds', extract(epoch FROM b.updated_at)::double precision)
) m(metric, value)
$$;

-- Whether a jobspec id names a job: a jobs row or a run (SPEC "Portal reads": unknown is
-- neither), for the 404 of GET /api/v1/jobs/{id}.
CREATE OR REPLACE FUNCTION public.serve_job_known(p_jobspec_id text)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT EXISTS (SELECT 1 FROM public.jobs j WHERE j.jobspec_id = p_jobspec_id)
    OR EXISTS (SELECT 1 FROM public.cross_region_executions x WHERE x.jobspec_id = p_jobspec_id)
$$;

REVOKE ALL ON FUNCTION public.serve_health() FROM PUBLIC;
REVOKE ALL ON FUNCTION public.serve_metrics() FROM PUBLIC;
REVOKE ALL ON FUNCTION public.serve_job_known(text) FROM PUBLIC;
