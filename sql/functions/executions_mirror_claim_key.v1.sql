-- executions_mirror_claim_key(job_id, region, model_id, question_id): re-apply the mirror rule
-- for one key, over the region results of (job_id, region). Locks in the mirror's order: the
-- key's mirrored rows, then the (job_id, region) lock; the region results are listed only
-- after that lock, so that one inserted concurrently is either listed here or mirrored by its
-- own trigger after this transaction commits, seeing the direct row.
CREATE OR REPLACE FUNCTION public.executions_mirror_claim_key(job integer, region text,
                                                              model_id text, question_id text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_variable
DECLARE
    attempt integer := 0;
    waiting_since timestamptz := clock_timestamp();
BEGIN
    LOOP  -- all or nothing, as in region_results_mirror_apply
        attempt := attempt + 1;
        BEGIN
            PERFORM 1 FROM public.executions e
            WHERE e.job_id = job AND e.region = region AND e.model_id = model_id
              AND e.question_id = question_id AND e.mirror_region_result_id IS NOT NULL
            ORDER BY e.id
            FOR NO KEY UPDATE NOWAIT;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM public.executions_mirror_lock_pause(waiting_since, attempt);
        END;
    END LOOP;
    PERFORM pg_advisory_xact_lock(public.executions_mirror_lock_key(job, region, NULL));
    PERFORM public.region_results_mirror_apply(
        ARRAY(SELECT i.region_result_id FROM public.region_results_mirror_inputs i
              WHERE i.job_id = job AND i.region = region),
        ARRAY[jsonb_build_array(model_id, question_id)::text], 'keys');
END
$$;
