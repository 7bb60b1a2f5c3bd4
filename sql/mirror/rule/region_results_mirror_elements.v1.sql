-- region_results_mirror_elements(elements): the per-pair result elements of
-- execution_output.executions, one row each: its pair when usable, and whether it wins its pair
-- (the last usable element of a pair). Read by the rule and the append path (inlined).
CREATE OR REPLACE FUNCTION public.region_results_mirror_elements(elements jsonb)
RETURNS TABLE (ordinality bigint, element jsonb, model_id text, question_id text,
               usable boolean, wins boolean)
LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 12
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
