-- region_results_mirror_apply(region_result_ids, only_pairs, scope, dry_run): bring executions
-- in line with the mirror rule for these region results (SPEC "Materialising the rule into
-- executions"). Takes the per-(job_id, region) advisory locks first, in key order, then
-- applies region_results_mirror_plan in one statement (so the plan sees every row committed
-- before the locks were granted): inserts what is missing, updates only what differs (no
-- write, no executions_id_seq value for unchanged data), deletes what is no longer yielded,
-- detaches instead of deleting a row the transparency log references, records the mirror
-- state and new anomalies. dry_run computes the same counts and writes nothing.
-- Called by the trigger functions and by `beaconsql backfill`.
CREATE OR REPLACE FUNCTION public.region_results_mirror_apply(
    region_result_ids uuid[],
    only_pairs text[] DEFAULT NULL,
    scope text DEFAULT 'region',
    dry_run boolean DEFAULT false)
RETURNS TABLE (inserted integer, updated integer, deleted integer, detached integer,
               left_to_direct integer, anomalies integer, states integer)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public, pg_temp
-- One generic plan per statement, cached for the session: re-planning these statements on
-- every call (custom plans) costs more than running them.
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    attempt integer := 0;
    waiting_since timestamptz := clock_timestamp();
BEGIN
    IF cardinality(region_result_ids) IS NULL OR cardinality(region_result_ids) = 0 THEN
        RETURN QUERY SELECT 0, 0, 0, 0, 0, 0, 0;
        RETURN;
    END IF;
    -- Lock order, the same on every path: executions rows first, then the (job_id, region)
    -- locks. A runner UPDATE of executions (its cancel, its retry) locks its rows before its
    -- trigger asks for the advisory lock; taking ours the other way round would deadlock with
    -- it. Called from a trigger, the rows this region result's mirror may touch are locked here;
    -- the backfill (no trigger) skips it: it gives up on any lock wait before a deadlock check
    -- could fire (its lock_timeout is below deadlock_timeout), so a writer never loses to it.
    -- All or nothing: none of these rows is held while waiting for another, so that a runner
    -- UPDATE locking them in its own (scan) order can always finish first.
    IF pg_trigger_depth() > 0 AND NOT dry_run THEN
        LOOP
            attempt := attempt + 1;
            BEGIN
                PERFORM 1
                FROM public.executions e
                WHERE e.mirror_region_result_id = ANY (region_result_ids)
                  AND (scope <> 'keys'
                       OR jsonb_build_array(e.model_id, e.question_id)::text = ANY (only_pairs))
                ORDER BY e.id
                FOR NO KEY UPDATE NOWAIT;
                EXIT;
            EXCEPTION WHEN lock_not_available THEN
                PERFORM public.executions_mirror_lock_pause(waiting_since, attempt);
            END;
        END LOOP;
    END IF;
    -- SPEC "Serialisation": one lock per (job_id, region), in key order to avoid deadlocks.
    PERFORM pg_advisory_xact_lock(k.key)
    FROM (SELECT public.executions_mirror_lock_key(i.job_id, i.region, i.region_result_id) AS key
          FROM public.region_results_mirror_inputs i
          WHERE i.region_result_id = ANY (region_result_ids)
          UNION
          SELECT public.executions_mirror_lock_key(e.job_id, e.region, e.mirror_region_result_id)
          FROM public.executions e
          WHERE e.mirror_region_result_id = ANY (region_result_ids)
          ORDER BY 1) k;

    RETURN QUERY
    WITH
    plan AS MATERIALIZED (
        SELECT * FROM public.region_results_mirror_plan(region_result_ids, only_pairs, scope)),
    ins AS (
        INSERT INTO public.executions (
            job_id, cross_region_execution_id, region, provider_id, model_id, question_id,
            status, started_at, completed_at, created_at, output_data, receipt_data,
            original_error, mirror_region_result_id, mirror_evidence)
        SELECT p.job_id, p.cross_region_execution_id, p.region, p.provider_id, p.model_id,
               p.question_id, p.status, p.started_at, p.completed_at, p.created_at,
               p.output_data, p.receipt_data, p.original_error, p.region_result_id, p.evidence
        FROM plan p
        WHERE p.action = 'insert' AND NOT dry_run
        RETURNING 1),
    upd AS (
        UPDATE public.executions e
        SET job_id = p.job_id, cross_region_execution_id = p.cross_region_execution_id,
            region = p.region, provider_id = p.provider_id, status = p.status,
            started_at = p.started_at, completed_at = p.completed_at, created_at = p.created_at,
            output_data = p.output_data, receipt_data = p.receipt_data,
            original_error = p.original_error, mirror_evidence = p.evidence
        FROM plan p
        WHERE p.action = 'update' AND NOT dry_run AND e.id = p.execution_id
        RETURNING 1),
    del AS (
        DELETE FROM public.executions e
        USING plan p
        WHERE p.action = 'delete' AND NOT dry_run AND e.id = p.execution_id
        RETURNING 1),
    det AS (
        UPDATE public.executions e
        SET mirror_region_result_id = NULL
        FROM plan p
        WHERE p.action = 'detach' AND NOT dry_run AND e.id = p.execution_id
        RETURNING 1),
    st AS (
        INSERT INTO public.region_results_mirror_state AS s
            (region_result_id, r_xmin, job_fingerprint, mirrored_at)
        SELECT p.region_result_id, p.r_xmin, p.job_fingerprint, now()
        FROM plan p
        WHERE p.action = 'state' AND NOT dry_run
        ON CONFLICT (region_result_id) DO UPDATE
        SET r_xmin = excluded.r_xmin, job_fingerprint = excluded.job_fingerprint,
            mirrored_at = excluded.mirrored_at
        RETURNING 1),
    forget AS (
        DELETE FROM public.region_results_mirror_state s
        USING plan p
        WHERE p.action = 'forget' AND NOT dry_run AND s.region_result_id = p.region_result_id
        RETURNING 1),
    anom AS (
        INSERT INTO public.region_results_mirror_anomalies (region_result_id, kind, detail)
        SELECT p.region_result_id, p.anomaly_kind, p.anomaly_detail
        FROM plan p
        WHERE p.action = 'anomaly' AND NOT dry_run
        ON CONFLICT DO NOTHING
        RETURNING 1)
    SELECT count(*) FILTER (WHERE p.action = 'insert')::integer,
           count(*) FILTER (WHERE p.action = 'update')::integer,
           count(*) FILTER (WHERE p.action = 'delete')::integer,
           count(*) FILTER (WHERE p.action = 'detach')::integer,
           count(*) FILTER (WHERE p.action = 'left_to_direct'
                            OR p.reason = 'a direct row owns its key')::integer,
           count(*) FILTER (WHERE p.action = 'anomaly')::integer,
           count(*) FILTER (WHERE p.action IN ('state', 'forget'))::integer
    FROM plan p;
END
$$;
