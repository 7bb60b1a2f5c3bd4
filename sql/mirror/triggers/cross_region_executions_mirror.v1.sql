-- The triggers on cross_region_executions (SPEC "Follows its inputs"). A run's DELETE cascades
-- to its region results, whose mirrored rows reference the run (no ON DELETE): before it, the
-- rows referencing the run are locked (before any lock of the mirror's: a statement holding one
-- of them may be waiting for one), its region results deleted (their trigger removes their rows),
-- and rows the transparency log kept let go of the run. A run moved to another jobspec_id
-- re-derives its region results.
CREATE OR REPLACE FUNCTION public.cross_region_executions_mirror_delete()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    PERFORM 1 FROM public.executions e
    WHERE e.cross_region_execution_id = OLD.id
    ORDER BY e.id
    FOR UPDATE;
    DELETE FROM public.region_results r WHERE r.cross_region_execution_id = OLD.id;
    -- rows of region results deleted earlier while triggers were skipped
    PERFORM public.region_results_mirror_apply(ARRAY(
        SELECT DISTINCT e.mirror_region_result_id FROM public.executions e
        WHERE e.cross_region_execution_id = OLD.id AND e.mirror_region_result_id IS NOT NULL));
    UPDATE public.executions e
    SET cross_region_execution_id = NULL
    WHERE e.cross_region_execution_id = OLD.id
      AND e.mirror_region_result_id IS NULL
      AND e.mirror_evidence IS NOT NULL;
    RETURN OLD;
END
$$;

CREATE OR REPLACE FUNCTION public.cross_region_executions_mirror_update()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    PERFORM public.region_results_mirror_apply(ARRAY(
        SELECT r.id
        FROM old_rows o
        JOIN new_rows n ON n.id = o.id
        JOIN public.region_results r ON r.cross_region_execution_id = n.id
        WHERE o.jobspec_id IS DISTINCT FROM n.jobspec_id
        ORDER BY 1));
    RETURN NULL;
END
$$;
