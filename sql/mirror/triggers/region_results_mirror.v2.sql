-- Version 2 of region_results_mirror_update(), the AFTER UPDATE trigger function of
-- region_results_mirror.v1.sql (revision 0007; the guard, insert and delete functions stand as
-- version 1 defines them): it asks region_results_mirror_output_changed whether what the rule
-- reads of execution_output changed. Version 1 compared the legacy answer alone when neither
-- version held an array, and so kept an anomaly naming the elements' old JSON type.

-- region_results_mirror_output_changed(old_elements, new_elements, old_output, new_output):
-- whether what the rule reads of a region result's execution_output differs between two
-- versions: its elements (execution_output.executions) when either is an array; else their
-- JSON type (the malformed_executions anomaly names it) and the legacy answer (data). The
-- elements come extracted (a region's execution_output is compressed: each read of it
-- decompresses it); the outputs are read only for their data. Read by region_results_mirror_update.
CREATE OR REPLACE FUNCTION public.region_results_mirror_output_changed(
    old_elements jsonb, new_elements jsonb, old_output jsonb, new_output jsonb)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(new_elements) = 'array' OR jsonb_typeof(old_elements) = 'array' THEN
        RETURN old_elements IS DISTINCT FROM new_elements;
    END IF;
    RETURN jsonb_typeof(old_elements) IS DISTINCT FROM jsonb_typeof(new_elements)
           OR (old_output -> 'data') IS DISTINCT FROM (new_output -> 'data');
END
$$;
REVOKE EXECUTE ON FUNCTION public.region_results_mirror_output_changed(jsonb, jsonb, jsonb, jsonb)
    FROM PUBLIC;

CREATE OR REPLACE FUNCTION public.region_results_mirror_update()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    -- Each execution_output read once (a region's is compressed: every read of it would
    -- decompress it again).
    old_elements jsonb := OLD.execution_output -> 'executions';
    new_elements jsonb := NEW.execution_output -> 'executions';
    changed boolean;
    pairs text[];
    slim public.region_results := NEW;
BEGIN
    IF NEW.id = OLD.id
       AND (NEW.cross_region_execution_id, NEW.region, NEW.provider_id, NEW.status,
            NEW.started_at, NEW.completed_at, NEW.error_message, NEW.model_id)
           IS NOT DISTINCT FROM
           (OLD.cross_region_execution_id, OLD.region, OLD.provider_id, OLD.status,
            OLD.started_at, OLD.completed_at, OLD.error_message, OLD.model_id) THEN
        changed := public.region_results_mirror_output_changed(
                       old_elements, new_elements, OLD.execution_output, NEW.execution_output);
        IF NOT changed THEN
            -- Nothing the rule reads changed: the rows stand; record the new version.
            IF public.region_results_mirror_hold_state(
                   NEW.id, (SELECT i.job_fingerprint FROM public.region_results_mirror_inputs i
                            WHERE i.region_result_id = NEW.id)) IS NOT FALSE THEN
                RETURN NULL;
            END IF;
        ELSIF (OLD.execution_output IS NULL OR jsonb_typeof(old_elements) = 'array')
              AND jsonb_typeof(new_elements) = 'array' THEN
            slim.execution_output := NULL;  -- handed on without its biggest column
            IF public.region_results_mirror_append(slim, coalesce(old_elements, '[]'), new_elements) THEN
                RETURN NULL;
            END IF;
            pairs := public.region_results_mirror_changed_pairs(coalesce(old_elements, '[]'),
                                                                new_elements);
        END IF;
    END IF;
    PERFORM public.region_results_mirror_apply(ARRAY[OLD.id, NEW.id], pairs);
    RETURN NULL;
END
$$;
