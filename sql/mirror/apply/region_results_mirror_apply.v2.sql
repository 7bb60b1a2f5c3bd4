-- Version 2 (revision 0008): a region result that stores nothing yet records every anomaly the
-- rule reports for it at once, those of its placeholders included (version 1 recorded none of
-- those until the region finished: a model id over 50 characters went unreported while it ran).

-- region_results_mirror_apply(region_result_ids, only_pairs, record_state, lock_keys, dry_run):
-- bring executions and the mirror's tables in line with the rule for these region results (and,
-- with lock_keys, whatever else those keys' locks cover), under the mirror's locks, and count
-- what changed. With the triggers, the only writer of executions' mirrored rows and of the
-- mirror's tables. Called by the triggers and `beaconsql backfill`; its lock order is in
-- docs/mirror.md ("Locks").
CREATE OR REPLACE FUNCTION public.region_results_mirror_apply(
    region_result_ids uuid[],
    only_pairs text[] DEFAULT NULL,
    record_state boolean DEFAULT true,
    lock_keys text[] DEFAULT NULL,
    dry_run boolean DEFAULT false)
RETURNS TABLE (inserted integer, updated integer, deleted integer, detached integer,
               left_to_direct integer, anomalies integer, states integer, deferred integer)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    changes public.executions_mirror_change[];
    targets integer[];
    runs uuid[];
    jobs integer[];
    held_rows integer[] := '{}';
    held_runs uuid[] := '{}';
    held_jobs integer[] := '{}';
    waited boolean := false;
    deferred_ids uuid[] := '{}';
    n_deferred integer := 0;
    session_lock_timeout text := current_setting('lock_timeout');
    n_insert integer;
    n_update integer;
    n_delete integer;
    n_detach integer;
    n_left integer;
    n_anomalies integer;
    n_states integer;
    n_forgotten integer;
    started uuid[];
    n_started_anomalies integer := 0;
BEGIN
    IF coalesce(cardinality(region_result_ids), 0) = 0 AND lock_keys IS NULL THEN
        RETURN QUERY SELECT 0, 0, 0, 0, 0, 0, 0, 0;
        RETURN;
    END IF;

    IF NOT dry_run AND record_state AND only_pairs IS NULL AND lock_keys IS NULL THEN
        -- 0. Region results that store nothing and never did (just started: no state, no
        -- row): their state and anomalies only, all of them (those of the placeholders too:
        -- an over-long id). No lock (there is no row to serialise) and no diff: the
        -- placeholders are the view's.
        WITH fresh AS (
            SELECT i.region_result_id AS id, i.region_result AS rr, i.r_xmin, i.job_id,
                   i.jobspec_data, i.job_status, i.job_fingerprint
            FROM public.region_results_mirror_inputs i
            WHERE i.region_result_id = ANY (region_result_ids)
              AND NOT i.has_state
              AND public.region_results_mirror_stores_nothing(i.region_result)
              AND NOT EXISTS (SELECT 1 FROM public.executions e
                              WHERE e.mirror_region_result_id = i.region_result_id)),
        states AS (
            INSERT INTO public.region_results_mirror_state
                (region_result_id, r_xmin, job_fingerprint, finished, mirrored_at)
            SELECT f.id, f.r_xmin, f.job_fingerprint, false, now() FROM fresh f
            ON CONFLICT (region_result_id) DO NOTHING
            RETURNING region_result_id),
        found AS (
            INSERT INTO public.region_results_mirror_anomalies (region_result_id, kind, detail)
            SELECT f.id, a.anomaly_kind, a.anomaly_detail
            FROM fresh f
            CROSS JOIN LATERAL public.region_results_mirror_rows(
                f.rr, f.job_id, f.jobspec_data, f.job_status) a
            WHERE a.anomaly_kind IS NOT NULL AND f.id IN (SELECT region_result_id FROM states)
            ON CONFLICT DO NOTHING
            RETURNING 1)
        SELECT array_agg(st.region_result_id), (SELECT count(*) FROM found)
        INTO started, n_started_anomalies
        FROM states st;
        IF started IS NOT NULL THEN
            region_result_ids := ARRAY(SELECT u FROM unnest(region_result_ids) u
                                       WHERE NOT u = ANY (started));
            IF cardinality(region_result_ids) = 0 THEN
                RETURN QUERY SELECT 0, 0, 0, 0, 0, n_started_anomalies, cardinality(started), 0;
                RETURN;
            END IF;
        END IF;
    END IF;

    IF NOT dry_run THEN
        -- 1. The mirror's own locks, each set in key order: (job_id, region) locks, then the
        -- region results' states (the append path's lock). Waiting for them is safe: whoever
        -- holds them waits for nothing but the mirror's locks (see step 3).
        PERFORM public.region_results_mirror_lock(region_result_ids, lock_keys);
    END IF;

    -- 2. The plan, with a snapshot taken once the locks are held.
    SELECT array_agg(p) INTO changes
    FROM public.region_results_mirror_plan(region_result_ids, only_pairs, record_state) p;
    IF dry_run THEN
        RETURN QUERY
        SELECT count(*) FILTER (WHERE c.action = 'insert')::integer,
               count(*) FILTER (WHERE c.action = 'update')::integer,
               count(*) FILTER (WHERE c.action = 'delete')::integer,
               count(*) FILTER (WHERE c.action = 'detach')::integer,
               count(*) FILTER (WHERE c.action = 'leave' OR c.finding = 'beside_direct')::integer,
               count(*) FILTER (WHERE c.action = 'record_anomaly')::integer,
               count(*) FILTER (WHERE c.action IN ('record_state', 'forget_state'))::integer,
               0
        FROM unnest(changes) c;
        RETURN;
    END IF;
    changes := coalesce(changes, '{}');

    -- 3. Rows the mirror does not own a lock for: executions rows to change, and the run and
    -- job rows new rows reference (their foreign key checks lock them). Another statement may
    -- hold them while it waits for one of the mirror's locks held here: never wait for them
    -- with these held beyond a short moment. What cannot be locked is deferred: its region
    -- result is marked not mirrored (the view derives its rows; verify reports it; the next
    -- apply of it, or a backfill, writes them).
    targets := ARRAY(SELECT c.execution_id FROM unnest(changes) c
                     WHERE c.action IN ('update', 'delete', 'detach'));
    runs := ARRAY(SELECT DISTINCT (c.mirror_row).cross_region_execution_id FROM unnest(changes) c
                  WHERE c.action = 'insert');
    jobs := ARRAY(SELECT DISTINCT (c.mirror_row).job_id FROM unnest(changes) c
                  WHERE c.action = 'insert' AND (c.mirror_row).job_id IS NOT NULL);
    LOOP
        -- A row is still the plan's only while it is still linked to the same region result
        -- (FOR UPDATE re-checks that against its newest version).
        held_rows := held_rows || ARRAY(
            SELECT e.id FROM public.executions e
            WHERE e.id = ANY (targets) AND NOT e.id = ANY (held_rows)
              AND (e.id, e.mirror_region_result_id) IN (
                  SELECT c.execution_id, c.region_result_id FROM unnest(changes) c
                  WHERE c.action IN ('update', 'delete', 'detach'))
            ORDER BY e.id FOR UPDATE SKIP LOCKED);
        held_runs := held_runs || ARRAY(
            SELECT x.id FROM public.cross_region_executions x
            WHERE x.id = ANY (runs) AND NOT x.id = ANY (held_runs)
            ORDER BY x.id FOR KEY SHARE SKIP LOCKED);
        held_jobs := held_jobs || ARRAY(
            SELECT j.id FROM public.jobs j
            WHERE j.id = ANY (jobs) AND NOT j.id = ANY (held_jobs)
            ORDER BY j.id FOR KEY SHARE SKIP LOCKED);
        EXIT WHEN waited
               OR (cardinality(held_rows) = cardinality(targets)
                   AND cardinality(held_runs) = cardinality(runs)
                   AND cardinality(held_jobs) = cardinality(jobs));
        -- Some are held elsewhere: wait for them a moment, once.
        waited := true;
        BEGIN
            PERFORM set_config('lock_timeout', '20ms', true);
            PERFORM 1 FROM public.executions e
            WHERE e.id = ANY (targets) AND NOT e.id = ANY (held_rows)
            ORDER BY e.id FOR UPDATE;
            PERFORM 1 FROM public.cross_region_executions x
            WHERE x.id = ANY (runs) AND NOT x.id = ANY (held_runs)
            ORDER BY x.id FOR KEY SHARE;
            PERFORM 1 FROM public.jobs j
            WHERE j.id = ANY (jobs) AND NOT j.id = ANY (held_jobs)
            ORDER BY j.id FOR KEY SHARE;
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- what is still held elsewhere is deferred below
        END;
        PERFORM set_config('lock_timeout', session_lock_timeout, true);
    END LOOP;
    deferred_ids := ARRAY(
        SELECT DISTINCT c.region_result_id FROM unnest(changes) c
        WHERE (c.action IN ('update', 'delete', 'detach') AND NOT c.execution_id = ANY (held_rows))
           OR (c.action = 'insert'
               AND (NOT (c.mirror_row).cross_region_execution_id = ANY (held_runs)
                    OR ((c.mirror_row).job_id IS NOT NULL
                        AND NOT (c.mirror_row).job_id = ANY (held_jobs)))));
    IF cardinality(deferred_ids) > 0 THEN
        SELECT count(*) INTO n_deferred FROM unnest(changes) c
        WHERE c.region_result_id = ANY (deferred_ids)
          AND c.action IN ('insert', 'update', 'delete', 'detach');
        changes := ARRAY(SELECT c FROM unnest(changes) c
                         WHERE NOT (c.region_result_id = ANY (deferred_ids)
                                    AND c.action IN ('insert', 'update', 'delete', 'detach',
                                                     'record_state')));
    END IF;

    SELECT count(*) FILTER (WHERE c.action = 'insert'),
           count(*) FILTER (WHERE c.action = 'update'),
           count(*) FILTER (WHERE c.action = 'delete'),
           count(*) FILTER (WHERE c.action = 'detach'),
           count(*) FILTER (WHERE c.action = 'leave' OR c.finding = 'beside_direct'),
           count(*) FILTER (WHERE c.action = 'record_anomaly'),
           count(*) FILTER (WHERE c.action = 'record_state'),
           count(*) FILTER (WHERE c.action = 'forget_state')
    INTO n_insert, n_update, n_delete, n_detach, n_left, n_anomalies, n_states, n_forgotten
    FROM unnest(changes) c;

    -- 4. executions: each statement only when it has rows (a statement on executions, even
    -- of none, opens its indexes and fires its statement triggers).
    IF n_insert > 0 THEN
        PERFORM public.executions_mirror_insert(ARRAY(
            SELECT c.mirror_row FROM unnest(changes) c WHERE c.action = 'insert'));
    END IF;
    IF n_update > 0 THEN
        PERFORM public.executions_mirror_update(
            ARRAY(SELECT c.execution_id FROM unnest(changes) c WHERE c.action = 'update'
                  ORDER BY c.execution_id),
            ARRAY(SELECT c.mirror_row FROM unnest(changes) c WHERE c.action = 'update'
                  ORDER BY c.execution_id));
    END IF;
    IF n_delete > 0 THEN
        DELETE FROM public.executions e
        USING unnest(changes) c
        WHERE c.action = 'delete' AND e.id = c.execution_id;
    END IF;
    IF n_detach > 0 THEN
        UPDATE public.executions e
        SET mirror_region_result_id = NULL
        FROM unnest(changes) c
        WHERE c.action = 'detach' AND e.id = c.execution_id;
    END IF;

    -- 5. The mirror's tables.
    IF n_states > 0 THEN
        INSERT INTO public.region_results_mirror_state AS s
            (region_result_id, r_xmin, job_fingerprint, finished, mirrored_at)
        SELECT c.region_result_id, c.r_xmin, c.job_fingerprint, c.finished, now()
        FROM unnest(changes) c
        WHERE c.action = 'record_state'
        ON CONFLICT (region_result_id) DO UPDATE
        SET r_xmin = excluded.r_xmin, job_fingerprint = excluded.job_fingerprint,
            finished = excluded.finished, mirrored_at = excluded.mirrored_at;
    END IF;
    IF cardinality(deferred_ids) > 0 THEN
        UPDATE public.region_results_mirror_state s
        SET r_xmin = NULL
        WHERE s.region_result_id = ANY (deferred_ids);
    END IF;
    IF n_forgotten > 0 THEN
        DELETE FROM public.region_results_mirror_state s
        USING unnest(changes) c
        WHERE c.action = 'forget_state' AND s.region_result_id = c.region_result_id;
    END IF;
    IF n_anomalies > 0 THEN
        INSERT INTO public.region_results_mirror_anomalies (region_result_id, kind, detail)
        SELECT c.region_result_id, c.anomaly_kind, c.anomaly_detail
        FROM unnest(changes) c
        WHERE c.action = 'record_anomaly'
        ON CONFLICT DO NOTHING;
    END IF;

    RETURN QUERY SELECT n_insert, n_update, n_delete, n_detach, n_left,
                        n_anomalies + n_started_anomalies,
                        n_states + n_forgotten + coalesce(cardinality(started), 0), n_deferred;
END
$$;
