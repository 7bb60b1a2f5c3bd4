-- Version 2 of cross_region_executions_mirror_delete(), the BEFORE DELETE trigger function of
-- cross_region_executions_mirror.v1.sql (revision 0009; the update trigger stands as version 1
-- defines it): it locks the run's rows through cross_region_executions_mirror_lock_rows, which
-- never waits long for one of them while holding others. Version 1 locked them in id order in
-- one statement; the runner's cancel locks a job's rows in its own scan order, so a cancel
-- holding row B and waiting for row A, against a run's DELETE holding A and waiting for B, was
-- a deadlock and PostgreSQL aborted one of the two.

-- cross_region_executions_mirror_holder_waits(execution_id): whether the holder of that
-- executions row's lock may be waiting for this backend: it is among the backends this one
-- blocks, directly or through others (pg_blocking_pids), or it cannot be told (the row's xmax
-- names no transaction in progress: a multixact, or a lock just let go). Read by
-- cross_region_executions_mirror_lock_rows.
CREATE OR REPLACE FUNCTION public.cross_region_executions_mirror_holder_waits(execution_id integer)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE
    waits AS (
        SELECT a.pid, b.blocker
        FROM pg_catalog.pg_stat_activity a
        CROSS JOIN LATERAL unnest(pg_catalog.pg_blocking_pids(a.pid)) b(blocker)),
    waiting_for_this AS (
        SELECT w.pid FROM waits w WHERE w.blocker = pg_catalog.pg_backend_pid()
        UNION
        SELECT w.pid FROM waits w JOIN waiting_for_this t ON w.blocker = t.pid),
    holders AS (
        SELECT l.pid FROM pg_catalog.pg_locks l
        WHERE l.locktype = 'transactionid' AND l.granted
          AND l.transactionid = (SELECT e.xmax FROM public.executions e
                                 WHERE e.id = cross_region_executions_mirror_holder_waits.execution_id))
    SELECT NOT EXISTS (SELECT 1 FROM holders)
           OR EXISTS (SELECT 1 FROM holders h JOIN waiting_for_this t ON t.pid = h.pid)
$$;
REVOKE EXECUTE ON FUNCTION public.cross_region_executions_mirror_holder_waits(integer) FROM PUBLIC;

-- cross_region_executions_mirror_lock_rows(run_id): locks every executions row referencing the
-- run. It takes the free ones (SKIP LOCKED) and keeps them, so that writers of single rows of
-- the run cannot starve it, and waits for a row held elsewhere in moments of 20 ms (or the
-- session's lock_timeout, if less). After each moment it lets go of everything taken (a
-- subtransaction, rolled back), waits for that row alone and starts again, when the holder of
-- the row may be waiting for this statement (it is among the backends blocked, directly or
-- not, by this one, or it cannot be told: cross_region_executions_mirror_holder_waits), when
-- the session has a lock_timeout of its own, or once half of deadlock_timeout has passed since
-- the attempt began. So every wait while holding rows ends within three quarters of
-- deadlock_timeout of the attempt's start, before any statement that began to wait for one of
-- its rows runs its deadlock check (deadlock_timeout after it began to wait): none finds this
-- one waiting for it.
CREATE OR REPLACE FUNCTION public.cross_region_executions_mirror_lock_rows(run_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    deadlock_wait interval := current_setting('deadlock_timeout')::interval;
    session_lock_timeout text := current_setting('lock_timeout');
    -- a moment: 20 ms, at most a quarter of deadlock_timeout and the session's lock_timeout
    -- (least ignores a lock_timeout of 0: none), in whole milliseconds, at least 1
    moment text := greatest(1, floor(1000 * extract(epoch FROM least(
                       interval '20 ms', deadlock_wait / 4,
                       nullif(session_lock_timeout::interval, interval '0')))))::text || 'ms';
    started timestamptz;
    taken integer[];
    held_elsewhere integer;
BEGIN
    LOOP
        BEGIN
            started := clock_timestamp();
            LOOP
                -- every row not held elsewhere: the free ones, and those taken here already
                taken := ARRAY(
                    SELECT e.id FROM public.executions e
                    WHERE e.cross_region_execution_id = run_id
                    ORDER BY e.id FOR UPDATE SKIP LOCKED);
                held_elsewhere := (
                    SELECT min(o.id)
                    FROM (SELECT e.id FROM public.executions e
                          WHERE e.cross_region_execution_id = run_id
                          EXCEPT
                          SELECT t.id FROM unnest(taken) t(id)) o);
                IF held_elsewhere IS NULL THEN
                    PERFORM set_config('lock_timeout', session_lock_timeout, true);
                    RETURN;
                END IF;
                IF clock_timestamp() - started > deadlock_wait / 2 THEN
                    RAISE SQLSTATE 'BQ001';
                END IF;
                PERFORM set_config('lock_timeout', moment, true);
                BEGIN
                    PERFORM 1 FROM public.executions e WHERE e.id = held_elsewhere FOR UPDATE;
                EXCEPTION WHEN lock_not_available THEN
                    IF session_lock_timeout::interval > interval '0'
                       OR public.cross_region_executions_mirror_holder_waits(held_elsewhere) THEN
                        RAISE SQLSTATE 'BQ001';
                    END IF;
                END;
            END LOOP;
        EXCEPTION WHEN SQLSTATE 'BQ001' THEN
            NULL;  -- what this attempt locked is freed, and lock_timeout is the session's again
        END;
        -- Wait for that row, holding none of the run's rows, then let it go.
        BEGIN
            PERFORM 1 FROM public.executions e WHERE e.id = held_elsewhere FOR UPDATE;
            RAISE SQLSTATE 'BQ001';
        EXCEPTION WHEN SQLSTATE 'BQ001' THEN
            NULL;
        END;
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
