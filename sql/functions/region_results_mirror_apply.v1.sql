-- region_results_mirror_apply(region_result_ids, only_pairs, scope, dry_run, claim_job,
-- claim_region): bring executions in line with the mirror rule for these region results (SPEC
-- "Materialising the rule into executions"): takes the per-(job_id, region) advisory locks
-- (SPEC "Serialisation"), computes region_results_mirror_plan with a snapshot taken after
-- them, and applies it: inserts what is missing, updates only what differs (no write, no
-- executions_id_seq value for unchanged data), deletes what is no longer yielded, detaches
-- instead of deleting a row the transparency log references, records the mirror state and new
-- anomalies. dry_run computes the same counts and writes nothing. With claim_job and
-- claim_region (a direct row of that job and region arrived or left), the region results of
-- (claim_job, claim_region), and those the key's mirrored rows are linked to, are listed once
-- the lock is held, so that one inserted concurrently is either listed or mirrored after this
-- transaction, seeing the direct row.
--
-- Deadlocks: a runner UPDATE of executions (its cancel, its retry) locks rows in its own order
-- before its trigger asks for the advisory lock. Called from a trigger, this function does not
-- wait for a row while holding the advisory lock: it writes under a 1 ms lock_timeout, and
-- when a row is taken it rolls its attempt back (releasing the lock), pauses, and tries again
-- (executions_mirror_lock_pause honours the session's own lock_timeout); after
-- deadlock_timeout it waits plainly (see below). The backfill (no trigger) runs under its own
-- short lock_timeout and retries whole batches.
-- Called by the trigger functions and by `beaconsql backfill`.
CREATE OR REPLACE FUNCTION public.region_results_mirror_apply(
    region_result_ids uuid[],
    only_pairs text[] DEFAULT NULL,
    scope text DEFAULT 'region',
    dry_run boolean DEFAULT false,
    claim_job integer DEFAULT NULL,
    claim_region text DEFAULT NULL)
RETURNS TABLE (inserted integer, updated integer, deleted integer, detached integer,
               left_to_direct integer, anomalies integer, states integer)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public, pg_temp
-- One generic plan per statement, cached for the session: re-planning these statements on
-- every call (custom plans) costs more than running them.
SET plan_cache_mode = force_generic_plan
-- Index-driven plans: these statements read rows by key, and a generic plan cached while
-- the tables were small must not keep scanning them whole once they have grown.
SET enable_seqscan = off
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    ids uuid[] := region_result_ids;
    changes public.region_results_mirror_change[];
    optimistic boolean := pg_trigger_depth() > 0 AND NOT dry_run;
    session_lock_timeout text := current_setting('lock_timeout');
    attempt integer := 0;
    waiting_since timestamptz := clock_timestamp();
BEGIN
    IF claim_job IS NULL AND coalesce(cardinality(ids), 0) = 0 THEN
        RETURN QUERY SELECT 0, 0, 0, 0, 0, 0, 0;
        RETURN;
    END IF;
    LOOP
        attempt := attempt + 1;
        BEGIN
            IF claim_job IS NOT NULL THEN
                PERFORM pg_advisory_xact_lock(
                    public.executions_mirror_lock_key(claim_job, claim_region, NULL));
                ids := ARRAY(SELECT i.region_result_id FROM public.region_results_mirror_inputs i
                             WHERE i.job_id = claim_job AND i.region = claim_region
                             UNION
                             -- and those of the key's mirrored rows, whose region result may
                             -- be gone (deleted while triggers were skipped)
                             SELECT e.mirror_region_result_id FROM public.executions e
                             WHERE e.job_id = claim_job AND e.region = claim_region
                               AND e.mirror_region_result_id IS NOT NULL
                               AND jsonb_build_array(e.model_id, e.question_id)::text
                                   = ANY (only_pairs));
            END IF;
            -- One lock per (job_id, region), in key order; a region result without a job
            -- locks its own id.
            PERFORM pg_advisory_xact_lock(k.key)
            FROM (SELECT public.executions_mirror_lock_key(i.job_id, i.region, i.region_result_id) AS key
                  FROM public.region_results_mirror_inputs i
                  WHERE i.region_result_id = ANY (ids)
                  UNION
                  SELECT public.executions_mirror_lock_key(e.job_id, e.region, e.mirror_region_result_id)
                  FROM public.executions e
                  WHERE e.mirror_region_result_id = ANY (ids)
                  ORDER BY 1) k;

            SELECT array_agg(p) INTO changes
            FROM public.region_results_mirror_plan(ids, only_pairs, scope) p;
            IF changes IS NULL OR dry_run THEN
                EXIT;
            END IF;

            IF optimistic THEN
                PERFORM set_config('lock_timeout', '1ms', true);
            END IF;
            -- Executions rows, only when there is anything to write to them (a statement that
            -- writes executions opens its ~20 indexes). Planned for each call (EXECUTE): it
            -- joins the changes, one (a trigger) to thousands (a backfill batch), to executions,
            -- which may have grown since the session began; one cached plan would be wrong for
            -- some of them.
            IF EXISTS (SELECT 1 FROM unnest(changes) p
                       WHERE p.action IN ('insert', 'update', 'delete', 'detach')) THEN
                EXECUTE $dml$
                WITH
                plan AS (SELECT * FROM unnest($1)),
                ins AS (
                    INSERT INTO public.executions (
                        job_id, cross_region_execution_id, region, provider_id, model_id, question_id,
                        status, started_at, completed_at, created_at, output_data, receipt_data,
                        original_error, mirror_region_result_id, mirror_evidence)
                    SELECT p.job_id, p.cross_region_execution_id, p.region, p.provider_id, p.model_id,
                           p.question_id, p.status, p.started_at, p.completed_at, p.created_at,
                           p.output_data, p.receipt_data, p.original_error, p.region_result_id, p.evidence
                    FROM plan p
                    WHERE p.action = 'insert'
                    RETURNING 1),
                upd AS (
                    UPDATE public.executions e
                    SET job_id = p.job_id, cross_region_execution_id = p.cross_region_execution_id,
                        region = p.region, provider_id = p.provider_id, status = p.status,
                        started_at = p.started_at, completed_at = p.completed_at, created_at = p.created_at,
                        output_data = p.output_data, receipt_data = p.receipt_data,
                        original_error = p.original_error, mirror_evidence = p.evidence
                    FROM plan p
                    WHERE p.action = 'update' AND e.id = p.execution_id
                    RETURNING 1),
                del AS (
                    DELETE FROM public.executions e
                    USING plan p
                    WHERE p.action = 'delete' AND e.id = p.execution_id
                    RETURNING 1)
                UPDATE public.executions e
                SET mirror_region_result_id = NULL
                FROM plan p
                WHERE p.action = 'detach' AND e.id = p.execution_id
                $dml$ USING changes;
            END IF;
            -- The mirror state and new anomalies: no join to a table, so one cached plan fits
            -- every size.
            WITH
            plan AS (SELECT * FROM unnest(changes)),
            st AS (
                INSERT INTO public.region_results_mirror_state AS s
                    (region_result_id, r_xmin, job_fingerprint, mirrored_at)
                SELECT p.region_result_id, p.r_xmin, p.job_fingerprint, now()
                FROM plan p
                WHERE p.action = 'state'
                ON CONFLICT (region_result_id) DO UPDATE
                SET r_xmin = excluded.r_xmin, job_fingerprint = excluded.job_fingerprint,
                    mirrored_at = excluded.mirrored_at
                RETURNING 1),
            forget AS (
                DELETE FROM public.region_results_mirror_state s
                WHERE s.region_result_id = ANY (ARRAY(SELECT p.region_result_id FROM plan p
                                                      WHERE p.action = 'forget'))
                RETURNING 1)
            INSERT INTO public.region_results_mirror_anomalies (region_result_id, kind, detail)
            SELECT p.region_result_id, p.anomaly_kind, p.anomaly_detail
            FROM plan p
            WHERE p.action = 'anomaly'
            ON CONFLICT DO NOTHING;
            IF optimistic THEN
                PERFORM set_config('lock_timeout', session_lock_timeout, true);
            END IF;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            IF NOT optimistic THEN
                RAISE;
            END IF;
            -- The attempt, its advisory locks and its writes are rolled back: wait without them.
            PERFORM public.executions_mirror_lock_pause(waiting_since, attempt);
            -- Still refused after deadlock_timeout: whoever holds the rows may be waiting for a
            -- lock this transaction took before this call (an earlier row of the same
            -- statement: a run's other region result, the runner's cancel across regions),
            -- which no rollback here releases. Wait plainly from now on, so that PostgreSQL's
            -- deadlock detector sees such a cycle (and aborts one side) instead of both
            -- waiting forever.
            IF clock_timestamp() - waiting_since > current_setting('deadlock_timeout')::interval THEN
                optimistic := false;
            END IF;
        END;
    END LOOP;

    RETURN QUERY
    SELECT count(*) FILTER (WHERE p.action = 'insert')::integer,
           count(*) FILTER (WHERE p.action = 'update')::integer,
           count(*) FILTER (WHERE p.action = 'delete')::integer,
           count(*) FILTER (WHERE p.action = 'detach')::integer,
           count(*) FILTER (WHERE p.action = 'left_to_direct'
                            OR p.reason = 'a direct row owns its key')::integer,
           count(*) FILTER (WHERE p.action = 'anomaly')::integer,
           count(*) FILTER (WHERE p.action IN ('state', 'forget'))::integer
    FROM unnest(changes) p;
END
$$;
