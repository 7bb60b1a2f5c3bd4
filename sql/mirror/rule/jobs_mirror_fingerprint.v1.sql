-- jobs_mirror_fingerprint(job, spec): a hash of exactly what the stored rows of the mirror rule
-- read from a jobs row: its id, jobspec_data.metadata.models, .metadata.model and .questions
-- (NULL job: a value of its own). Read by region_results_mirror_inputs (inlined into views:
-- every function and operator schema-qualified).
CREATE OR REPLACE FUNCTION public.jobs_mirror_fingerprint(job integer, spec jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.md5(
        coalesce(job::text, '')
        OPERATOR(pg_catalog.||) '|'
        OPERATOR(pg_catalog.||) coalesce((spec OPERATOR(pg_catalog.#>) '{metadata,models}')::text, '')
        OPERATOR(pg_catalog.||) '|'
        OPERATOR(pg_catalog.||) coalesce((spec OPERATOR(pg_catalog.#>) '{metadata,model}')::text, '')
        OPERATOR(pg_catalog.||) '|'
        OPERATOR(pg_catalog.||) coalesce((spec OPERATOR(pg_catalog.->) 'questions')::text, ''))
$$;
