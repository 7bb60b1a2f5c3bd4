-- Version 2 of executions_mirror_detach(), the BEFORE UPDATE trigger function of
-- executions_mirror.v1.sql (revision 0011; the claim, insert, update and delete functions stand
-- as version 1 defines them): it asks the rule about the row's pair with the region result
-- narrowed to that pair's elements (region_results_mirror_narrow). Version 1 had the rule go
-- through every element of the region for each row: a statement changing k rows of a region of
-- n pairs took time in k·n (finishing a region of 300 running elements: 1.3–2.0 s).
CREATE OR REPLACE FUNCTION public.executions_mirror_detach()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    pairs text[] := ARRAY[jsonb_build_array(NEW.model_id, NEW.question_id)::text];
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM public.region_results_mirror_inputs i
        CROSS JOIN LATERAL public.region_results_mirror_rows(
            public.region_results_mirror_narrow(i.region_result, pairs),
            i.job_id, i.jobspec_data, i.job_status, pairs) f
        WHERE i.region_result_id = NEW.mirror_region_result_id
          AND f.stored
          AND f.mirror_row IS NOT DISTINCT FROM public.executions_mirror_row(NEW)) THEN
        NEW.mirror_region_result_id := NULL;
    END IF;
    RETURN NEW;
END
$$;
