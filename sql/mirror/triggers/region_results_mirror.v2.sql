-- Version 2 (revision 0007): what the rule reads of execution_output is told by
-- region_results_mirror_output_changed, which also compares the elements' JSON type when
-- neither version holds an array (an anomaly names it: version 1 missed such a change).
--
-- The triggers on region_results (SPEC "Follows its inputs"): each works out which region
-- results, and which of their pairs, a statement touched and hands them to apply.
-- region_results_mirror_guard (BEFORE UPDATE, row): the version an update replaces can only be
-- told mirrored before the update; when it was not, its state is cleared, so that what follows
-- re-derives the whole region result. region_results_mirror_update (AFTER UPDATE, row): an
-- append is one insert (region_results_mirror_append); a change of other fields than the rule
-- reads only records the new version; a change of some elements applies those pairs; anything
-- else re-derives. region_results_mirror_insert / _delete (AFTER, statement): apply.
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

CREATE OR REPLACE FUNCTION public.region_results_mirror_guard()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM public.region_results_mirror_state s
               WHERE s.region_result_id = OLD.id
                 AND s.r_xmin IS NOT NULL
                 AND s.r_xmin IS DISTINCT FROM (SELECT r.xmin FROM public.region_results r
                                                WHERE r.id = OLD.id)) THEN
        PERFORM public.region_results_mirror_lock(ARRAY[OLD.id]);
        UPDATE public.region_results_mirror_state s
        SET r_xmin = NULL
        WHERE s.region_result_id = OLD.id
          AND s.r_xmin IS NOT NULL
          AND s.r_xmin IS DISTINCT FROM (SELECT r.xmin FROM public.region_results r
                                         WHERE r.id = OLD.id);
    END IF;
    RETURN NEW;
END
$$;

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

CREATE OR REPLACE FUNCTION public.region_results_mirror_insert()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    PERFORM public.region_results_mirror_apply(ARRAY(SELECT n.id FROM new_rows n ORDER BY n.id));
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION public.region_results_mirror_delete()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    -- The deleted region results' (job_id, region) locks too, even with no rows of their own
    -- left: a claim that listed one of them before this delete commits then finishes first, and
    -- what it wrote is removed here.
    PERFORM public.region_results_mirror_apply(
        ARRAY(SELECT o.id FROM old_rows o ORDER BY o.id),
        lock_keys => ARRAY(
            SELECT public.executions_mirror_lock_key(j.id, o.region::text, o.id)
            FROM old_rows o
            LEFT JOIN public.cross_region_executions x ON x.id = o.cross_region_execution_id
            LEFT JOIN public.jobs j ON j.jobspec_id = x.jobspec_id));
    RETURN NULL;
END
$$;
