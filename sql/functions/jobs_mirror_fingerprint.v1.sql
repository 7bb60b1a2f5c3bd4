-- jobs_mirror_fingerprint(job, spec): a hash of exactly what the mirror rule
-- (region_results_mirror_rows) reads from a jobs row: its id, jobspec_data.metadata.models,
-- .metadata.model and .questions. Stored per region result in region_results_mirror_state, so
-- that a region result counts as mirrored only while its job still yields the same rows
-- (SPEC "Mirror state"). NULL job and spec (no jobs row) hash to a value of their own.
-- Read by region_results_mirror_plan and the view executions_unified.
CREATE OR REPLACE FUNCTION public.jobs_mirror_fingerprint(job integer, spec jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- No SET search_path, on purpose: it would stop the planner from inlining this expression
-- into its callers (the mirror functions and views), which pin their own search_path.
AS $$
    -- Every function and operator schema-qualified: inlined into the view
    -- region_results_mirror_inputs, this is parsed with the reading session's search_path.
    SELECT pg_catalog.md5(
        coalesce(job::text, '')
        OPERATOR(pg_catalog.||) '|'
        OPERATOR(pg_catalog.||) coalesce((spec OPERATOR(pg_catalog.#>) '{metadata,models}')::text, '')
        OPERATOR(pg_catalog.||) '|'
        OPERATOR(pg_catalog.||) coalesce((spec OPERATOR(pg_catalog.#>) '{metadata,model}')::text, '')
        OPERATOR(pg_catalog.||) '|'
        OPERATOR(pg_catalog.||) coalesce((spec OPERATOR(pg_catalog.->) 'questions')::text, ''))
$$;
