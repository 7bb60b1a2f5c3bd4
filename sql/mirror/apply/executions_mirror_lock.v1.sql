-- executions_mirror_lock_key(job_id, region, region_result_id): the key of the lock that
-- serialises everything able to create or remove executions rows of (job_id, region)'s keys;
-- without a job, the region result's own (SPEC "Serialisation"). executions_mirror_lock(keys):
-- takes those locks, in key order: row locks on executions_mirror_locks, a table no reader or
-- writer role may lock. region_results_mirror_lock(region_result_ids, lock_keys): every lock
-- applying those region results needs, in the mirror's one order (docs/mirror.md, "Locks"):
-- their (job_id, region) locks and lock_keys, then their state rows. Read by apply and the
-- triggers.
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

CREATE OR REPLACE FUNCTION public.region_results_mirror_lock(region_result_ids uuid[],
                                                             lock_keys text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    -- The keys of their jobs as they are now, and of the rows they have (whose job may be an
    -- earlier one).
    PERFORM public.executions_mirror_lock(ARRAY(
        SELECT k FROM unnest(lock_keys) k
        UNION
        SELECT public.executions_mirror_lock_key(i.job_id, i.region::text, i.region_result_id)
        FROM public.region_results_mirror_inputs i
        WHERE i.region_result_id = ANY (region_result_ids)
        UNION
        SELECT public.executions_mirror_lock_key(e.job_id, e.region::text, e.mirror_region_result_id)
        FROM public.executions e
        WHERE e.mirror_region_result_id = ANY (region_result_ids)));
    PERFORM 1 FROM public.region_results_mirror_state s
    WHERE s.region_result_id = ANY (region_result_ids)
    ORDER BY s.region_result_id
    FOR UPDATE;
END
$$;
