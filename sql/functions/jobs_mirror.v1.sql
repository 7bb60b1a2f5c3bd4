-- jobs_mirror(): AFTER INSERT / UPDATE OF jobspec_data, jobspec_id row trigger on jobs
-- (trigger zz_mirror). A job arriving late, or a changed spec, re-mirrors every region result
-- of its runs with the real models and questions (SPEC "Follows its inputs").
CREATE OR REPLACE FUNCTION public.jobs_mirror()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
-- One generic plan per statement, cached for the session: re-planning these statements on
-- every call (custom plans) costs more than running them.
SET plan_cache_mode = force_generic_plan
-- Index-driven plans: these statements read rows by key, and a generic plan cached while
-- the tables were small must not keep scanning them whole once they have grown.
SET enable_seqscan = off
AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (NEW.id, NEW.jobspec_id, NEW.jobspec_data) IS NOT DISTINCT FROM
           (OLD.id, OLD.jobspec_id, OLD.jobspec_data) THEN
        RETURN NULL;
    END IF;
    PERFORM public.region_results_mirror_apply(ARRAY(
        SELECT i.region_result_id
        FROM public.region_results_mirror_inputs i
        WHERE i.jobspec_id = NEW.jobspec_id
           OR (TG_OP = 'UPDATE' AND i.jobspec_id = OLD.jobspec_id)));
    RETURN NULL;
END
$$;
