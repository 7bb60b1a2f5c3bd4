-- Version 2 of region_results_mirror_elements (revision 0010): version 1 with every function,
-- operator and type schema-qualified, for the reason given in jobs_mirror_models.v2.sql (the
-- writer's finish_region counts a region's pairs with it).

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
           AND e.ord OPERATOR(pg_catalog.=) pg_catalog.max(e.ord) FILTER (WHERE u.model_id IS NOT NULL)
                       OVER (PARTITION BY u.model_id, u.question_id)
    FROM pg_catalog.jsonb_array_elements(
             CASE WHEN pg_catalog.jsonb_typeof(elements) OPERATOR(pg_catalog.=) 'array'
                  THEN elements END)
         WITH ORDINALITY AS e(v, ord)
    CROSS JOIN LATERAL (
        SELECT CASE WHEN t.usable THEN e.v OPERATOR(pg_catalog.->>) 'model_id' END AS model_id,
               CASE WHEN t.usable THEN e.v OPERATOR(pg_catalog.->>) 'question_id' END AS question_id
        FROM (SELECT pg_catalog.jsonb_typeof(e.v) OPERATOR(pg_catalog.=) 'object'
                     AND pg_catalog.jsonb_typeof(e.v OPERATOR(pg_catalog.->) 'model_id')
                         OPERATOR(pg_catalog.=) 'string'
                     AND (e.v OPERATOR(pg_catalog.->>) 'model_id') OPERATOR(pg_catalog.<>) ''
                     AND pg_catalog.jsonb_typeof(e.v OPERATOR(pg_catalog.->) 'question_id')
                         OPERATOR(pg_catalog.=) 'string'
                     AND (e.v OPERATOR(pg_catalog.->>) 'question_id') OPERATOR(pg_catalog.<>) ''
                     AS usable) t
    ) u
    ORDER BY e.ord
$$;
