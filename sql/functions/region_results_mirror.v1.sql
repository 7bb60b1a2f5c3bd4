-- region_results_mirror(): AFTER INSERT/UPDATE/DELETE row trigger on region_results (trigger
-- zz_mirror). Mirrors the change into executions in the same transaction through
-- region_results_mirror_apply (SPEC "The mirror rule", "Materialising the rule"). An UPDATE
-- that only changes per-pair elements of execution_output.executions (the writer's
-- record_pair) mirrors just that element (region_results_mirror_append), or just the pairs
-- whose element changed; every other change re-derives the region result.
CREATE OR REPLACE FUNCTION public.region_results_mirror()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
-- One generic plan per statement, cached for the session: re-planning these statements on
-- every call (custom plans) costs more than running them.
SET plan_cache_mode = force_generic_plan
-- Index-driven plans: these statements read rows by key, and a generic plan cached while
-- the tables were small must not keep scanning them whole once they have grown.
SET enable_seqscan = off
AS $$
DECLARE
    pairs text[];
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id
       AND (NEW.cross_region_execution_id, NEW.region, NEW.provider_id, NEW.status,
            NEW.started_at, NEW.completed_at, NEW.error_message, NEW.model_id)
           IS NOT DISTINCT FROM
           (OLD.cross_region_execution_id, OLD.region, OLD.provider_id, OLD.status,
            OLD.started_at, OLD.completed_at, OLD.error_message, OLD.model_id)
       AND (OLD.execution_output IS NULL
            OR jsonb_typeof(OLD.execution_output -> 'executions') = 'array')
       AND jsonb_typeof(NEW.execution_output -> 'executions') = 'array' THEN
        IF public.region_results_mirror_append(OLD, NEW) THEN
            RETURN NULL;
        END IF;
        pairs := public.region_results_mirror_changed_pairs(
            coalesce(OLD.execution_output -> 'executions', '[]'::jsonb),
            NEW.execution_output -> 'executions');
        IF pairs IS NOT NULL THEN
            PERFORM public.region_results_mirror_apply(ARRAY[NEW.id], pairs, 'changed_pairs');
            RETURN NULL;
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        -- The (job_id, region) lock, even when no row of its own is left to find it by (every
        -- pair owned by direct rows): a mirror write that listed this region result before the
        -- delete commits then finishes first, and what it wrote is removed here, instead of
        -- landing after the delete (a row whose run is gone, a state of nothing).
        PERFORM pg_advisory_xact_lock(public.executions_mirror_lock_key(
            (SELECT j.id FROM public.cross_region_executions x
             JOIN public.jobs j ON j.jobspec_id = x.jobspec_id
             WHERE x.id = OLD.cross_region_execution_id),
            OLD.region, OLD.id));
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM public.region_results_mirror_apply(ARRAY[OLD.id]);
    END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.id <> OLD.id) THEN
        PERFORM public.region_results_mirror_apply(ARRAY[NEW.id]);
    END IF;
    RETURN NULL;
END
$$;
