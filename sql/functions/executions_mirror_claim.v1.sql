-- executions_mirror_claim(): AFTER INSERT/UPDATE/DELETE row trigger on executions for direct
-- rows (trigger zz_mirror_claim). A direct row owns its key (SPEC "Materialising the rule"):
-- when one arrives (or a row is detached, or a direct row's key changes) the mirrored rows of
-- that key go; when the last one of a key leaves, the mirror takes the key back. Both go
-- through region_results_mirror_apply, restricted to the key, for the region results of
-- (job_id, region) as they stand once its per-(job_id, region) lock is held. A row detached
-- from a region result without a job owns no key: that region result's pair is mirrored again.
CREATE OR REPLACE FUNCTION public.executions_mirror_claim()
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
    IF TG_OP <> 'DELETE' AND NEW.mirror_region_result_id IS NULL AND NEW.job_id IS NOT NULL
       AND NEW.model_id <> '' AND NEW.question_id <> '' THEN
        PERFORM public.region_results_mirror_apply(
            NULL, ARRAY[jsonb_build_array(NEW.model_id, NEW.question_id)::text], 'keys', false,
            NEW.job_id, NEW.region);
    END IF;
    -- The key a row leaves: a direct row deleted, or any row (direct or being detached) moved
    -- to another key. If no direct row owns it any more, the mirror takes it back.
    IF TG_OP <> 'INSERT' AND OLD.job_id IS NOT NULL AND OLD.model_id <> '' AND OLD.question_id <> ''
       AND ((TG_OP = 'DELETE' AND OLD.mirror_region_result_id IS NULL)
            OR (TG_OP = 'UPDATE'
                AND (OLD.job_id, OLD.region, OLD.model_id, OLD.question_id)
                    IS DISTINCT FROM (NEW.job_id, NEW.region, NEW.model_id, NEW.question_id))) THEN
        PERFORM public.region_results_mirror_apply(
            NULL, ARRAY[jsonb_build_array(OLD.model_id, OLD.question_id)::text], 'keys', false,
            OLD.job_id, OLD.region);
    END IF;
    -- A detached row without a job has no key (SPEC "Words": never matched with anything), so
    -- it owns nothing: its region result's pair is mirrored again, as a backfill would.
    IF TG_OP = 'UPDATE' AND OLD.mirror_region_result_id IS NOT NULL AND OLD.job_id IS NULL THEN
        PERFORM public.region_results_mirror_apply(
            ARRAY[OLD.mirror_region_result_id],
            ARRAY[jsonb_build_array(OLD.model_id, OLD.question_id)::text], 'keys');
    END IF;
    RETURN NULL;
END
$$;
