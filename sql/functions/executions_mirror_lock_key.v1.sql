-- executions_mirror_lock_key(job_id, region, region_result_id): the advisory lock key that
-- serialises everything able to create or remove an executions row for a key (job_id, region,
-- …): the mirror trigger, the trigger on direct rows and the backfill (SPEC "Serialisation").
-- Without a job there is no key to share; the region result's own id is locked instead.
-- Read by region_results_mirror_apply.
CREATE OR REPLACE FUNCTION public.executions_mirror_lock_key(job_id integer, region text,
                                                             region_result_id uuid)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT hashtextextended(
        CASE WHEN job_id IS NOT NULL THEN format('beaconsql mirror %s %s', job_id, region)
             ELSE format('beaconsql mirror %s', region_result_id) END,
        0)
$$;
