-- region_results_mirror_elements(elements): the per-pair results of a region result, read from
-- execution_output.executions (the writer's format, SPEC "The mirror rule"): one row per array
-- element, whether it is usable (an object with non-empty string model_id and question_id) and
-- whether it wins its pair (the last usable element of a repeated pair wins).
-- Read by region_results_mirror_rows (the rule) and region_results_mirror_changed_pairs.
CREATE OR REPLACE FUNCTION public.region_results_mirror_elements(elements jsonb)
RETURNS TABLE (ordinality bigint, element jsonb, model_id text, question_id text,
               usable boolean, wins boolean)
LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 12
-- No SET search_path here, on purpose: a SQL function with one is never inlined, and this
-- one runs inlined inside the mirror rule, whose search_path is pinned.
AS $$
    SELECT e.ord, e.v, u.model_id, u.question_id, u.model_id IS NOT NULL,
           u.model_id IS NOT NULL
           AND e.ord = max(e.ord) FILTER (WHERE u.model_id IS NOT NULL)
                       OVER (PARTITION BY u.model_id, u.question_id)
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(elements) = 'array' THEN elements END)
         WITH ORDINALITY AS e(v, ord)
    CROSS JOIN LATERAL (
        SELECT CASE WHEN t.usable THEN e.v ->> 'model_id' END AS model_id,
               CASE WHEN t.usable THEN e.v ->> 'question_id' END AS question_id
        FROM (SELECT jsonb_typeof(e.v) = 'object'
                     AND jsonb_typeof(e.v -> 'model_id') = 'string' AND e.v ->> 'model_id' <> ''
                     AND jsonb_typeof(e.v -> 'question_id') = 'string' AND e.v ->> 'question_id' <> ''
                     AS usable) t
    ) u
    ORDER BY e.ord
$$;
