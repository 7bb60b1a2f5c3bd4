-- The triggers on executions: whoever writes it, at any depth (SPEC "Detach", "A direct row owns
-- its key", "Any writer, at any depth").
-- executions_mirror_detach (BEFORE UPDATE, row, when a column the mirror owns changes on a
-- mirrored row): the row stays mirrored only if it now equals the rule's row for its region
-- result and pair; any other change detaches it (it becomes a direct row).
-- executions_mirror_claim(keys): a direct row came to, or left, these keys
-- (jsonb_build_array(job_id, region, model_id, question_id)::text): under the keys' locks, the
-- region results of their (job_id, region) are applied to those pairs.
-- executions_mirror_insert (AFTER INSERT, row, direct rows), _update and _delete (AFTER,
-- statement): claim the keys rows came to or left; a mirrored row deleted while the rule still
-- yields it leaves its region result not mirrored.
CREATE OR REPLACE FUNCTION public.executions_mirror_detach()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM public.region_results_mirror_inputs i
        CROSS JOIN LATERAL public.region_results_mirror_rows(
            i.region_result, i.job_id, i.jobspec_data, i.job_status,
            ARRAY[jsonb_build_array(NEW.model_id, NEW.question_id)::text]) f
        WHERE i.region_result_id = NEW.mirror_region_result_id
          AND f.stored
          AND f.mirror_row IS NOT DISTINCT FROM public.executions_mirror_row(NEW)) THEN
        NEW.mirror_region_result_id := NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION public.executions_mirror_claim(keys text[])
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    IF coalesce(cardinality(keys), 0) = 0 THEN
        RETURN;
    END IF;
    -- The locks first, then the region results listed under them: one inserted concurrently is
    -- either listed here or applied after this transaction, seeing its direct rows.
    PERFORM public.executions_mirror_lock(ARRAY(
        SELECT DISTINCT public.executions_mirror_lock_key(
            (k::jsonb ->> 0)::integer, k::jsonb ->> 1, NULL::uuid)
        FROM unnest(keys) k));
    PERFORM public.region_results_mirror_apply(
        ARRAY(SELECT i.region_result_id
              FROM unnest(keys) k
              JOIN public.region_results_mirror_inputs i
                ON i.job_id = (k::jsonb ->> 0)::integer AND i.region = k::jsonb ->> 1
              UNION
              -- and those of the keys' mirrored rows, whose region result may be gone
              SELECT e.mirror_region_result_id
              FROM unnest(keys) k
              JOIN public.executions e
                ON e.job_id = (k::jsonb ->> 0)::integer AND e.region = k::jsonb ->> 1
               AND e.model_id = k::jsonb ->> 2 AND e.question_id = k::jsonb ->> 3
              WHERE e.mirror_region_result_id IS NOT NULL),
        ARRAY(SELECT DISTINCT jsonb_build_array(k::jsonb -> 2, k::jsonb -> 3)::text FROM unnest(keys) k),
        record_state => false);
END
$$;

CREATE OR REPLACE FUNCTION public.executions_mirror_insert()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    PERFORM public.executions_mirror_claim(
        ARRAY[jsonb_build_array(NEW.job_id, NEW.region, NEW.model_id, NEW.question_id)::text]);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION public.executions_mirror_update()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    PERFORM public.executions_mirror_claim(ARRAY(
        SELECT DISTINCT jsonb_build_array(k.job_id, k.region, k.model_id, k.question_id)::text
        FROM old_rows o
        JOIN new_rows n ON n.id = o.id
        CROSS JOIN LATERAL (VALUES
            -- the key a row now owns: detached, or a direct row moved to it
            (CASE WHEN n.mirror_region_result_id IS NULL
                       AND (o.mirror_region_result_id IS NOT NULL
                            OR (o.job_id, o.region, o.model_id, nullif(o.question_id, ''))
                               IS DISTINCT FROM
                               (n.job_id, n.region, n.model_id, nullif(n.question_id, '')))
                  THEN n.job_id END, n.region, n.model_id, nullif(n.question_id, '')),
            -- the key a row left
            (CASE WHEN (o.job_id, o.region, o.model_id, nullif(o.question_id, ''))
                       IS DISTINCT FROM (n.job_id, n.region, n.model_id, nullif(n.question_id, ''))
                  THEN o.job_id END, o.region, o.model_id, nullif(o.question_id, ''))
        ) k(job_id, region, model_id, question_id)
        WHERE k.job_id IS NOT NULL AND k.question_id IS NOT NULL));
    -- A row without a job has no key (SPEC "Words"): detached, it owns nothing, and its
    -- region result's pair is mirrored again.
    PERFORM public.region_results_mirror_apply(
        ARRAY(SELECT DISTINCT o.mirror_region_result_id FROM old_rows o JOIN new_rows n ON n.id = o.id
              WHERE o.mirror_region_result_id IS NOT NULL AND n.mirror_region_result_id IS NULL
                AND n.job_id IS NULL),
        ARRAY(SELECT DISTINCT jsonb_build_array(o.model_id, o.question_id)::text
              FROM old_rows o JOIN new_rows n ON n.id = o.id
              WHERE o.mirror_region_result_id IS NOT NULL AND n.mirror_region_result_id IS NULL
                AND n.job_id IS NULL),
        record_state => false);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION public.executions_mirror_delete()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    unmirrored uuid[];
BEGIN
    PERFORM public.executions_mirror_claim(ARRAY(
        SELECT DISTINCT jsonb_build_array(o.job_id, o.region, o.model_id, o.question_id)::text
        FROM old_rows o
        WHERE o.mirror_region_result_id IS NULL AND o.job_id IS NOT NULL
          AND nullif(o.question_id, '') IS NOT NULL));
    -- Mirrored rows deleted although the rule still yields them: their region results no
    -- longer reflect it (SPEC "Mirror state"): not mirrored until applied again.
    unmirrored := ARRAY(
        SELECT DISTINCT p.region_result_id
        FROM public.region_results_mirror_plan(
                 ARRAY(SELECT DISTINCT o.mirror_region_result_id FROM old_rows o
                       WHERE o.mirror_region_result_id IS NOT NULL),
                 ARRAY(SELECT DISTINCT jsonb_build_array(o.model_id, o.question_id)::text
                       FROM old_rows o WHERE o.mirror_region_result_id IS NOT NULL),
                 false) p
        WHERE p.action = 'insert');
    IF cardinality(unmirrored) > 0 THEN
        UPDATE public.region_results_mirror_state s
        SET r_xmin = NULL
        WHERE s.region_result_id = ANY (unmirrored);
    END IF;
    RETURN NULL;
END
$$;
