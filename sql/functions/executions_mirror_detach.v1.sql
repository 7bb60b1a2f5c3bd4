-- executions_mirror_detach(): BEFORE UPDATE row trigger on executions for mirrored rows,
-- fired only for statements outside any trigger (trigger zz_mirror_detach). When anyone but
-- the mirror changes a column the mirror owns (the runner's cancel, its retry service, a hand
-- fix), the row is detached: its link is cleared and it becomes a direct row that owns its key
-- (SPEC "Detach"). An update that leaves the row exactly as the rule yields it (the backfill
-- repairing drift) keeps it mirrored.
CREATE OR REPLACE FUNCTION public.executions_mirror_detach()
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
    IF (NEW.job_id, NEW.cross_region_execution_id, NEW.region, NEW.provider_id, NEW.model_id,
        NEW.question_id, NEW.status, NEW.started_at, NEW.completed_at, NEW.created_at,
        NEW.output_data, NEW.receipt_data, NEW.original_error, NEW.mirror_region_result_id,
        NEW.mirror_evidence)
       IS NOT DISTINCT FROM
       (OLD.job_id, OLD.cross_region_execution_id, OLD.region, OLD.provider_id, OLD.model_id,
        OLD.question_id, OLD.status, OLD.started_at, OLD.completed_at, OLD.created_at,
        OLD.output_data, OLD.receipt_data, OLD.original_error, OLD.mirror_region_result_id,
        OLD.mirror_evidence) THEN
        RETURN NEW;  -- only columns the mirror does not own changed
    END IF;
    IF NEW.mirror_region_result_id IS NOT NULL AND public.executions_mirror_expects(NEW, true) THEN
        RETURN NEW;
    END IF;
    NEW.mirror_region_result_id := NULL;
    RETURN NEW;
END
$$;
