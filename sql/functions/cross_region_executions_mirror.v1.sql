-- cross_region_executions_mirror(): BEFORE DELETE row trigger on cross_region_executions
-- (trigger zz_mirror). Deleting a run cascades to its region results; their mirrored rows
-- reference the run through executions.cross_region_execution_id (no ON DELETE), so the
-- region results are deleted first, letting their own mirror trigger remove those rows (and
-- the rows of region results deleted while triggers were skipped go too), and rows the
-- transparency log kept (detached) let go of the run. The DELETE keeps working (SPEC "Follows
-- its inputs").
CREATE OR REPLACE FUNCTION public.cross_region_executions_mirror()
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
BEGIN
    -- The (job_id, region) locks of all its region results first, in key order (the order
    -- region_results_mirror_apply takes them): deleting them one by one would take them in
    -- row order, against a job's re-mirror (its spec updated) taking them in key order.
    PERFORM pg_advisory_xact_lock(k.key)
    FROM (SELECT DISTINCT public.executions_mirror_lock_key(i.job_id, i.region, i.region_result_id)
                 AS key
          FROM public.region_results_mirror_inputs i
          WHERE i.cross_region_execution_id = OLD.id
          ORDER BY 1) k;
    DELETE FROM public.region_results WHERE cross_region_execution_id = OLD.id;
    -- Mirrored rows of the run's region results deleted earlier while triggers were skipped.
    PERFORM public.region_results_mirror_apply(ARRAY(
        SELECT DISTINCT e.mirror_region_result_id FROM public.executions e
        WHERE e.cross_region_execution_id = OLD.id AND e.mirror_region_result_id IS NOT NULL));
    UPDATE public.executions
    SET cross_region_execution_id = NULL
    WHERE cross_region_execution_id = OLD.id
      AND mirror_region_result_id IS NULL
      AND mirror_evidence IS NOT NULL;
    RETURN OLD;
END
$$;
