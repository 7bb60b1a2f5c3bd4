-- executions_mirror_status(word): a runner status word (region, pair or job) in the executions
-- vocabulary, matched case-insensitively after trimming ASCII whitespace (SPEC "The mirror
-- rule", Status); NULL for a word outside it (the caller applies the fallback, an anomaly).
-- executions_mirror_finished(status): whether an executions status is finished (SPEC "Words").
-- region_results_mirror_region_status(status, completed_at): a region's status, an unknown word
-- being failed once the region has a completed_at, else pending. Read by the rule, the plan and
-- the append path; inlined (no SET search_path), every call schema-qualified.
CREATE OR REPLACE FUNCTION public.executions_mirror_status(word text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE pg_catalog.lower(pg_catalog.btrim(coalesce(word, 'pending'), E' \t\n\r\f\v'))
               WHEN 'success' THEN 'completed' WHEN 'completed' THEN 'completed'
               WHEN 'succeeded' THEN 'completed' WHEN 'done' THEN 'completed'
               WHEN 'finished' THEN 'completed'
               WHEN 'failed' THEN 'failed' WHEN 'error' THEN 'failed' WHEN 'timeout' THEN 'failed'
               WHEN 'running' THEN 'running' WHEN 'processing' THEN 'running'
               WHEN 'retrying' THEN 'running'
               WHEN 'queued' THEN 'pending' WHEN 'pending' THEN 'pending'
               WHEN 'cancelled' THEN 'cancelled' WHEN 'canceled' THEN 'cancelled'
           END
$$;

CREATE OR REPLACE FUNCTION public.executions_mirror_finished(status text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT status OPERATOR(pg_catalog.=) ANY ('{completed,failed,cancelled}'::text[])
$$;

CREATE OR REPLACE FUNCTION public.region_results_mirror_region_status(status text,
                                                                     completed_at timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT coalesce(public.executions_mirror_status(status),
                    CASE WHEN completed_at IS NOT NULL THEN 'failed' ELSE 'pending' END)
$$;
