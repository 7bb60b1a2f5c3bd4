-- region_results_mirror_hold_state(region_result_id, job_fingerprint): the fast paths' lock.
-- When the region result's state says it is mirrored for a job of this fingerprint, record the
-- new version in it (holding the state row until commit) and return true; when it does not,
-- return false, having locked nothing: the caller applies the region result, taking the
-- mirror's locks in their order. Should the state change while this waited for its row (a
-- concurrent apply holds it), the row is held already and the mirror's lock order forbids
-- taking a (job_id, region) lock after it (PostgreSQL keeps the lock of a row an UPDATE
-- waited for, even when the row then fails the UPDATE's WHERE): the region result is then
-- left not mirrored, for its next write or a backfill, and NULL returned.
CREATE OR REPLACE FUNCTION public.region_results_mirror_hold_state(region_result_id uuid,
                                                                   job_fingerprint text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    rid uuid := region_result_id;
    fp text := job_fingerprint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.region_results_mirror_state s
                   WHERE s.region_result_id = rid AND s.r_xmin IS NOT NULL
                     AND s.job_fingerprint = fp) THEN
        RETURN false;
    END IF;
    UPDATE public.region_results_mirror_state s
    SET r_xmin = (SELECT r.xmin FROM public.region_results r WHERE r.id = rid),
        mirrored_at = now()
    WHERE s.region_result_id = rid AND s.r_xmin IS NOT NULL AND s.job_fingerprint = fp;
    IF FOUND THEN
        RETURN true;
    END IF;
    UPDATE public.region_results_mirror_state s SET r_xmin = NULL WHERE s.region_result_id = rid;
    RETURN NULL;
END
$$;

-- region_results_mirror_append(new_row, old_elements, new_elements): apply an UPDATE of region
-- result new_row (its execution_output left out) that only appended one element to its
-- execution_output.executions (the writer's record_pair) as one insert, without re-deriving the
-- region (SPEC "Idempotent and quiet"). Returns false, having written and locked nothing, when
-- the change needs more; the caller then applies the region result. Once it holds the state
-- row it never hands over: it finishes the pair, or defers it. Called by
-- region_results_mirror_update.
CREATE OR REPLACE FUNCTION public.region_results_mirror_append(new_row public.region_results,
                                                               old_elements jsonb,
                                                               new_elements jsonb)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
AS $$
DECLARE
    v record;
    job integer;
    fingerprint text;
    held boolean;
    row public.executions_mirror_row;
    owned boolean;
    existing integer;
BEGIN
    IF jsonb_typeof(old_elements) <> 'array' OR jsonb_typeof(new_elements) <> 'array'
       OR jsonb_array_length(new_elements) <> jsonb_array_length(old_elements) + 1
       OR new_elements - (-1) <> old_elements
       OR length(new_row.region) > 100 OR length(coalesce(new_row.provider_id, '')) > 255 THEN
        RETURN false;
    END IF;
    -- The appended element's pair and values, when usable and free of anomalies (recording
    -- those is the general path's).
    SELECT e.model_id, e.question_id, x.*
    INTO v
    FROM public.region_results_mirror_elements(jsonb_build_array(new_elements -> -1)) e
    CROSS JOIN LATERAL public.region_results_mirror_element_row(
        public.region_results_mirror_region_status(new_row.status::text, new_row.completed_at),
        new_row.started_at AT TIME ZONE 'UTC', new_row.completed_at AT TIME ZONE 'UTC',
        e.element) x
    WHERE e.usable AND length(e.model_id) <= 50 AND length(e.question_id) <= 255;
    IF NOT FOUND OR v.status_unknown OR v.invalid_started_at OR v.invalid_completed_at
       OR v.unreadable_started_at OR v.unreadable_completed_at OR v.unfinished
       OR v.started_at IS NULL THEN
        RETURN false;
    END IF;
    SELECT j.id, public.jobs_mirror_fingerprint(j.id, j.jobspec_data) INTO job, fingerprint
    FROM public.cross_region_executions x
    LEFT JOIN public.jobs j ON j.jobspec_id = x.jobspec_id
    WHERE x.id = new_row.cross_region_execution_id;
    row := ROW(job, new_row.cross_region_execution_id, new_row.region,
               coalesce(new_row.provider_id, ''), v.model_id, v.question_id, v.status,
               v.started_at, v.completed_at, v.started_at, v.output_data, v.receipt_data,
               v.original_error, new_row.id, 3)::public.executions_mirror_row;
    -- The proof that the rest is mirrored, and the lock: the state of the version this update
    -- replaces (region_results_mirror_guard clears it otherwise) for the job as it is now.
    held := public.region_results_mirror_hold_state(new_row.id, fingerprint);
    IF held IS NULL THEN
        RETURN true;  -- left not mirrored (see region_results_mirror_hold_state)
    ELSIF NOT held THEN
        RETURN false;
    END IF;
    owned := job IS NOT NULL AND EXISTS (
        SELECT 1 FROM public.executions d
        WHERE d.mirror_region_result_id IS NULL AND d.job_id = job
          AND d.region = new_row.region AND d.model_id = v.model_id
          AND nullif(d.question_id, '') = v.question_id);
    SELECT e.id INTO existing
    FROM public.executions e
    WHERE e.mirror_region_result_id = new_row.id
      AND e.model_id = v.model_id AND e.question_id = v.question_id;
    IF existing IS NOT NULL AND NOT owned THEN
        -- The pair's row is there (an evidence-1 row of a finished region): it becomes the
        -- element's, if no other statement holds it.
        IF EXISTS (SELECT 1 FROM public.executions e WHERE e.id = existing
                   FOR UPDATE SKIP LOCKED) THEN
            PERFORM public.executions_mirror_update(ARRAY[existing], ARRAY[row]);
            RETURN true;
        END IF;
    ELSIF existing IS NULL AND owned THEN
        RETURN true;  -- a direct row owns the key: the rule's row is not materialised
    ELSIF existing IS NULL
          -- the rows the new one references, without waiting for them (see apply, step 3)
          AND EXISTS (SELECT 1 FROM public.cross_region_executions x
                      WHERE x.id = new_row.cross_region_execution_id FOR KEY SHARE SKIP LOCKED)
          AND (job IS NULL OR EXISTS (SELECT 1 FROM public.jobs j
                                      WHERE j.id = job FOR KEY SHARE SKIP LOCKED)) THEN
        PERFORM public.executions_mirror_insert(ARRAY[row]);
        RETURN true;
    END IF;
    -- Anything else (a row held by another statement, a mirrored row beside a direct one) is
    -- deferred: the region result is left not mirrored, for its next apply or a backfill.
    UPDATE public.region_results_mirror_state s SET r_xmin = NULL
    WHERE s.region_result_id = new_row.id;
    RETURN true;
END
$$;
