-- region_results_mirror_changed_pairs(old_elements, new_elements): the pairs whose winning
-- element an UPDATE of execution_output.executions changed, as keys jsonb_build_array(model_id,
-- question_id)::text; NULL when an unusable element came or went. Read by region_results_mirror_update.
CREATE OR REPLACE FUNCTION public.region_results_mirror_changed_pairs(old_elements jsonb,
                                                                      new_elements jsonb)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    appended jsonb;
    changed text[];
BEGIN
    -- The writer's usual step: one element appended at the end.
    IF jsonb_typeof(old_elements) = 'array' AND jsonb_typeof(new_elements) = 'array'
       AND jsonb_array_length(new_elements) = jsonb_array_length(old_elements) + 1
       AND new_elements - (-1) = old_elements THEN
        appended := new_elements -> -1;
        SELECT array_agg(jsonb_build_array(e.model_id, e.question_id)::text) INTO changed
        FROM public.region_results_mirror_elements(jsonb_build_array(appended)) e
        WHERE e.usable;
        RETURN changed;  -- NULL when the appended element is unusable
    END IF;

    IF (SELECT array_agg(e.element ORDER BY e.element)
        FROM public.region_results_mirror_elements(old_elements) e WHERE NOT e.usable)
       IS DISTINCT FROM
       (SELECT array_agg(e.element ORDER BY e.element)
        FROM public.region_results_mirror_elements(new_elements) e WHERE NOT e.usable) THEN
        RETURN NULL;
    END IF;

    SELECT coalesce(array_agg(jsonb_build_array(coalesce(n.model_id, o.model_id),
                                                coalesce(n.question_id, o.question_id))::text), '{}')
    INTO changed
    FROM (SELECT * FROM public.region_results_mirror_elements(old_elements) WHERE wins) o
    FULL JOIN (SELECT * FROM public.region_results_mirror_elements(new_elements) WHERE wins) n
           ON n.model_id = o.model_id AND n.question_id = o.question_id
    WHERE o.element IS DISTINCT FROM n.element;
    RETURN changed;
END
$$;
