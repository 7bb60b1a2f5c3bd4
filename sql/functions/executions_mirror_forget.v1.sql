-- executions_mirror_forget(): AFTER DELETE row trigger on executions for mirrored rows,
-- fired only for statements outside any trigger (trigger zz_mirror_forget). A mirrored row the
-- rule still yields, deleted by hand, leaves its region result's rows no longer reflecting it:
-- the region result is marked not mirrored, so that executions_unified derives its rows and
-- verify reports it, until a backfill restores the row (SPEC "Mirror state").
CREATE OR REPLACE FUNCTION public.executions_mirror_forget()
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
    IF public.executions_mirror_expects(OLD, false) THEN
        UPDATE public.region_results_mirror_state
        SET r_xmin = NULL
        WHERE region_result_id = OLD.mirror_region_result_id;
    END IF;
    RETURN NULL;
END
$$;
