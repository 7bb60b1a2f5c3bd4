-- region_results_mirror_append(old_row, new_row): the mirror's fast path for the writer's most
-- frequent write, record_pair appending one element to execution_output.executions (SPEC
-- "Idempotent and quiet": an append mirrors that element without re-deriving the region).
-- Returns true when it mirrored the change, false when the change is not that simple one (the
-- caller then applies region_results_mirror_apply). It applies only when the previous version of
-- the region result was mirrored (region_results_mirror_guard) and its job still yields the same
-- rows, the element is usable and raises no anomaly, and no direct row owns the pair's key; the
-- row's values come from region_results_mirror_element_row, the rule's own per-element part, so
-- the result equals what region_results_mirror_apply would write. Called by region_results_mirror.
CREATE OR REPLACE FUNCTION public.region_results_mirror_append(old_row public.region_results,
                                                               new_row public.region_results)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET plan_cache_mode = force_generic_plan
-- Index-driven plans: these statements read rows by key, and a generic plan cached while
-- the tables were small must not keep scanning them whole once they have grown.
SET enable_seqscan = off
AS $$
DECLARE
    old_elements jsonb := coalesce(old_row.execution_output -> 'executions', '[]'::jsonb);
    new_elements jsonb := new_row.execution_output -> 'executions';
    job integer;
    v record;
    updated boolean := false;
    locked boolean := false;
BEGIN
    IF jsonb_typeof(old_elements) <> 'array'
       OR jsonb_array_length(new_elements) <> jsonb_array_length(old_elements) + 1
       OR new_elements - (-1) <> old_elements
       OR length(new_row.region) > 100 OR length(coalesce(new_row.provider_id, '')) > 255 THEN
        RETURN false;
    END IF;
    -- The appended element's pair and values, if its region result was mirrored (at the
    -- version this update replaces: region_results_mirror_guard) for its job as it is now.
    SELECT i.job_id, e.model_id, e.question_id, x.*
    INTO v
    FROM public.region_results_mirror_inputs i
    CROSS JOIN LATERAL public.region_results_mirror_elements(jsonb_build_array(new_elements -> -1)) e
    CROSS JOIN LATERAL public.region_results_mirror_element_row(
        new_row, public.region_results_mirror_region_status(new_row), e.element) x
    WHERE i.region_result_id = new_row.id
      AND i.state_xmin IS NOT NULL
      AND i.state_job_fingerprint = i.job_fingerprint
      AND e.usable
      AND length(e.model_id) <= 50 AND length(e.question_id) <= 255;
    IF NOT FOUND OR v.status_unknown OR v.invalid_started_at OR v.invalid_completed_at
       OR v.unfinished THEN
        RETURN false;  -- anomalies are the general path's to record
    END IF;
    job := v.job_id;
    LOOP
        -- The usual case: the pair's row is there (expected, or an earlier element). Updating
        -- it takes its row lock before the (job_id, region) lock: the order
        -- region_results_mirror_apply explains.
        UPDATE public.executions e
        SET status = v.status, started_at = v.started_at, completed_at = v.completed_at,
            created_at = v.started_at, output_data = v.output_data, receipt_data = v.receipt_data,
            original_error = v.original_error, mirror_evidence = 3
        WHERE e.mirror_region_result_id = new_row.id
          AND e.model_id = v.model_id AND e.question_id = v.question_id
          AND (e.status, e.started_at, e.completed_at, e.created_at, e.output_data,
               e.receipt_data, e.original_error, e.mirror_evidence)
              IS DISTINCT FROM
              (v.status, v.started_at, v.completed_at, v.started_at, v.output_data,
               v.receipt_data, v.original_error, 3::smallint);
        updated := updated OR FOUND;
        EXIT WHEN locked;
        PERFORM pg_advisory_xact_lock(public.executions_mirror_lock_key(job, new_row.region, new_row.id));
        locked := true;
        IF job IS NOT NULL AND EXISTS (
            SELECT 1 FROM public.executions d
            WHERE d.mirror_region_result_id IS NULL AND d.job_id = job
              AND d.region = new_row.region AND d.model_id = v.model_id
              AND d.question_id = v.question_id) THEN
            -- A direct row owns the key: the general path removes ours (this transaction's
            -- update of it included).
            RETURN false;
        END IF;
        EXIT WHEN updated;
        -- Not there before the lock: look again with a snapshot taken under it (a concurrent
        -- claim of the key, on a direct row's delete, may just have mirrored the pair).
    END LOOP;
    IF NOT updated AND NOT EXISTS (
        SELECT 1 FROM public.executions e
        WHERE e.mirror_region_result_id = new_row.id
          AND e.model_id = v.model_id AND e.question_id = v.question_id) THEN
        INSERT INTO public.executions (
            job_id, cross_region_execution_id, region, provider_id, model_id, question_id,
            status, started_at, completed_at, created_at, output_data, receipt_data,
            original_error, mirror_region_result_id, mirror_evidence)
        VALUES (job, new_row.cross_region_execution_id, new_row.region,
                coalesce(new_row.provider_id, ''), v.model_id, v.question_id, v.status,
                v.started_at, v.completed_at, v.started_at, v.output_data, v.receipt_data,
                v.original_error, new_row.id, 3);
    END IF;

    UPDATE public.region_results_mirror_state s
    SET r_xmin = (SELECT r.xmin FROM public.region_results r WHERE r.id = new_row.id),
        mirrored_at = now()
    WHERE s.region_result_id = new_row.id;
    RETURN true;
END
$$;
