-- executions_mirror_lock_key(job_id, region, region_result_id): the advisory lock key that
-- serialises everything able to create or remove an executions row for a key (job_id, region,
-- …): the mirror trigger, the trigger on direct rows and the backfill (SPEC "Serialisation").
-- Without a job there is no key to share; the region result's own id is locked instead.
-- Read by region_results_mirror_apply.
CREATE OR REPLACE FUNCTION public.executions_mirror_lock_key(job_id integer, region text,
                                                             region_result_id uuid)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- No SET search_path, on purpose: it would stop the planner from inlining this expression
-- into its callers, which pin their own search_path.
AS $$
    SELECT hashtextextended(
        CASE WHEN job_id IS NOT NULL THEN 'beaconsql mirror ' || job_id::text || ' ' || region
             ELSE 'beaconsql mirror ' || region_result_id::text END,
        0)
$$;
