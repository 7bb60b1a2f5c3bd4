-- region_results_mirror_guard(): BEFORE UPDATE row trigger on region_results (trigger
-- zz_mirror_guard). Whether the version an UPDATE replaces was mirrored can only be told
-- before the update (its xmin is gone afterwards): when it was not (written while triggers
-- were skipped), the state is marked stale, so that the AFTER trigger re-derives the whole
-- region instead of applying only the changed pairs. Writes nothing in the usual case.
CREATE OR REPLACE FUNCTION public.region_results_mirror_guard()
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
    UPDATE public.region_results_mirror_state s
    SET r_xmin = NULL
    WHERE s.region_result_id = OLD.id
      AND s.r_xmin IS NOT NULL
      AND s.r_xmin IS DISTINCT FROM (SELECT r.xmin FROM public.region_results r WHERE r.id = OLD.id);
    RETURN NEW;
END
$$;
