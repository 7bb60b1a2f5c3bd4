-- The triggers on jobs (SPEC "Follows its inputs"): a job arriving after its runs, or a change
-- of what the rule reads from it (its id, jobspec_id, models, questions), re-derives the region
-- results of its runs. Statement-level: the job's status, written often, costs one comparison.
CREATE OR REPLACE FUNCTION public.jobs_mirror_insert()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    PERFORM public.region_results_mirror_apply(ARRAY(
        SELECT i.region_result_id
        FROM new_rows n
        JOIN public.region_results_mirror_inputs i ON i.jobspec_id = n.jobspec_id
        ORDER BY 1));
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION public.jobs_mirror_update()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    changed text[];
BEGIN
    changed := ARRAY(
        SELECT v.jobspec_id FROM (
            SELECT o.jobspec_id, n.jobspec_id AS new_jobspec_id
            FROM old_rows o
            JOIN new_rows n ON n.id = o.id
            WHERE o.jobspec_id IS DISTINCT FROM n.jobspec_id
               OR public.jobs_mirror_fingerprint(o.id, o.jobspec_data)
                  IS DISTINCT FROM public.jobs_mirror_fingerprint(n.id, n.jobspec_data)) c
        CROSS JOIN LATERAL (VALUES (c.jobspec_id), (c.new_jobspec_id)) v(jobspec_id));
    IF cardinality(changed) > 0 THEN
        PERFORM public.region_results_mirror_apply(ARRAY(
            SELECT i.region_result_id
            FROM public.region_results_mirror_inputs i
            WHERE i.jobspec_id = ANY (changed)
            ORDER BY 1));
    END IF;
    RETURN NULL;
END
$$;
