-- Version 2 of cross_region_executions_mirror_delete(), the BEFORE DELETE trigger function of
-- cross_region_executions_mirror.v1.sql (revision 0009; the update trigger stands as version 1
-- defines it): it locks the run's rows through cross_region_executions_mirror_lock_rows, which
-- never waits for one of them while holding another. Version 1 locked them in id order in one
-- statement; the runner's cancel locks a job's rows in its own scan order, so a cancel holding
-- row B and waiting for row A, against a run's DELETE holding A and waiting for B, was a
-- deadlock and PostgreSQL aborted one of the two.

-- cross_region_executions_mirror_lock_rows(run_id): locks every executions row referencing the
-- run, all at once or, while another statement holds one of them, none: it then waits for that
-- row alone, lets it go, and tries again. A statement holding one of them may be waiting for
-- another, in whatever order it locks them. Each attempt is a subtransaction, whose rollback
-- frees what it locked. Read by cross_region_executions_mirror_delete.
CREATE OR REPLACE FUNCTION public.cross_region_executions_mirror_lock_rows(run_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    held_elsewhere integer;
BEGIN
    LOOP
        BEGIN
            PERFORM 1 FROM public.executions e
            WHERE e.cross_region_execution_id = run_id
            ORDER BY e.id
            FOR UPDATE NOWAIT;
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- this attempt's locks are freed
        END;
        -- Which row is held elsewhere: the first one that cannot be locked at once.
        held_elsewhere := NULL;
        BEGIN
            FOR held_elsewhere IN
                SELECT e.id FROM public.executions e
                WHERE e.cross_region_execution_id = run_id
                ORDER BY e.id
            LOOP
                PERFORM 1 FROM public.executions e WHERE e.id = held_elsewhere FOR UPDATE NOWAIT;
            END LOOP;
            held_elsewhere := NULL;  -- freed meanwhile
            RAISE SQLSTATE 'BQ001';  -- free what this search locked
        EXCEPTION WHEN lock_not_available OR SQLSTATE 'BQ001' THEN
            NULL;
        END;
        -- Wait for it, holding none of the run's rows, then let it go.
        IF held_elsewhere IS NOT NULL THEN
            BEGIN
                PERFORM 1 FROM public.executions e WHERE e.id = held_elsewhere FOR UPDATE;
                RAISE SQLSTATE 'BQ001';
            EXCEPTION WHEN SQLSTATE 'BQ001' THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION public.cross_region_executions_mirror_lock_rows(uuid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION public.cross_region_executions_mirror_delete()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    -- Before any lock of the mirror's: a statement holding one of these rows may be waiting
    -- for one.
    PERFORM public.cross_region_executions_mirror_lock_rows(OLD.id);
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
