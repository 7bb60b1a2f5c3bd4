-- jobs_mirror_fingerprint(job, spec): a hash of exactly what the mirror rule
-- (region_results_mirror_rows) reads from a jobs row: its id, jobspec_data.metadata.models,
-- .metadata.model and .questions. Stored per region result in region_results_mirror_state, so
-- that a region result counts as mirrored only while its job still yields the same rows
-- (SPEC "Mirror state"). NULL job and spec (no jobs row) hash to a value of their own.
-- Read by region_results_mirror_plan and the view executions_unified.
CREATE OR REPLACE FUNCTION public.jobs_mirror_fingerprint(job integer, spec jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT md5(format('%s|%s|%s|%s', job, spec #> '{metadata,models}', spec #> '{metadata,model}',
                      spec -> 'questions'))
$$;
