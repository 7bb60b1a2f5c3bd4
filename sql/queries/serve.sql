-- What `beaconsql serve` reads beyond the portal's own queries (sql/queries/portal.sql): the
-- owner-rights functions of revision 0005, which the portal role may execute. Read by
-- beaconsql.serve.

-- name: statement_timeout
-- The request's statement_timeout, for its transaction only (milliseconds).
SELECT pg_catalog.set_config('statement_timeout', %(milliseconds)s, true);

-- name: health
-- The revision, whether the server is a standby, its replay lag, its system identifier.
SELECT h.revision, h.in_recovery, h.replay_lag_seconds, h.system_identifier
FROM public.serve_health() h;

-- name: metrics
-- The database's gauges for /metrics: (metric, label, value).
SELECT m.metric, m.label, m.value FROM public.serve_metrics() m;

-- name: job_known
-- Whether a jobspec id names a job (a jobs row or a run).
SELECT public.serve_job_known(%(jobspec_id)s);
