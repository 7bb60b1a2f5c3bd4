-- executions_mirror_lock_key(job_id, region, region_result_id): the key of the lock that
-- serialises everything able to create or remove executions rows of (job_id, region)'s keys;
-- without a job, the region result's own (SPEC "Serialisation"). executions_mirror_lock(keys):
-- takes those locks, in key order: row locks on executions_mirror_locks, a table no reader or
-- writer role may lock. Read by apply and the triggers.
CREATE OR REPLACE FUNCTION public.executions_mirror_lock_key(job_id integer, region text,
                                                             region_result_id uuid)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN job_id IS NOT NULL
                THEN 'job ' OPERATOR(pg_catalog.||) job_id::text OPERATOR(pg_catalog.||) ' '
                     OPERATOR(pg_catalog.||) region
                ELSE 'region result ' OPERATOR(pg_catalog.||) region_result_id::text END
$$;

CREATE OR REPLACE FUNCTION public.executions_mirror_lock(keys text[])
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- A key's first use creates its row; a concurrent creator makes this wait for it, as for
    -- the row lock itself.
    INSERT INTO public.executions_mirror_locks (lock_key)
    SELECT k FROM unnest(keys) k WHERE k IS NOT NULL ORDER BY k
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM public.executions_mirror_locks l
    WHERE l.lock_key = ANY (keys)
    ORDER BY l.lock_key
    FOR UPDATE;
END
$$;
