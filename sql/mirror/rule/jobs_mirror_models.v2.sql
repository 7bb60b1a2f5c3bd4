-- Version 2 of jobs_mirror_models (revision 0010): version 1 with every function, operator
-- and type schema-qualified (NULLIF and CASE x WHEN, which look up = in the search_path,
-- spelt out). It is inlined into queries that run in the caller's session (the view, the
-- writer's finish_region), where version 1's jsonb_typeof and jsonb operators resolved
-- through that session's search_path: a schema put ahead of pg_catalog chose the job's models.

-- jobs_mirror_models(spec, fallback_model): models(J) of the mirror rule, in order, numbered from
-- 1 in seq; unusable entries of metadata.models come back with model_id NULL, for anomalies.
-- Read by the rule and jobs_mirror_dimensions (inlined into both: no SET search_path).
CREATE OR REPLACE FUNCTION public.jobs_mirror_models(spec jsonb, fallback_model text DEFAULT NULL)
RETURNS TABLE (seq integer, model_id text, entry_index integer, entry jsonb)
LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 3
AS $$
    WITH entries AS (
        SELECT (m.ord OPERATOR(pg_catalog.-) 1)::integer AS entry_index, m.v AS entry,
               CASE
                   WHEN pg_catalog.jsonb_typeof(m.v) OPERATOR(pg_catalog.=) 'string'
                        AND (m.v OPERATOR(pg_catalog.#>>) '{}') OPERATOR(pg_catalog.<>) ''
                       THEN m.v OPERATOR(pg_catalog.#>>) '{}'
                   WHEN pg_catalog.jsonb_typeof(m.v) OPERATOR(pg_catalog.<>) 'object' THEN NULL
                   WHEN pg_catalog.jsonb_typeof(m.v OPERATOR(pg_catalog.->) 'id') OPERATOR(pg_catalog.=) 'string'
                        AND (m.v OPERATOR(pg_catalog.->>) 'id') OPERATOR(pg_catalog.<>) ''
                       THEN m.v OPERATOR(pg_catalog.->>) 'id'
                   WHEN pg_catalog.jsonb_typeof(m.v OPERATOR(pg_catalog.->) 'model_id') OPERATOR(pg_catalog.=) 'string'
                        AND (m.v OPERATOR(pg_catalog.->>) 'model_id') OPERATOR(pg_catalog.<>) ''
                       THEN m.v OPERATOR(pg_catalog.->>) 'model_id'
                   WHEN pg_catalog.jsonb_typeof(m.v OPERATOR(pg_catalog.->) 'name') OPERATOR(pg_catalog.=) 'string'
                        AND (m.v OPERATOR(pg_catalog.->>) 'name') OPERATOR(pg_catalog.<>) ''
                       THEN m.v OPERATOR(pg_catalog.->>) 'name'
               END AS id
        FROM pg_catalog.jsonb_array_elements(
                 CASE WHEN pg_catalog.jsonb_typeof(spec OPERATOR(pg_catalog.#>) '{metadata,models}')
                               OPERATOR(pg_catalog.=) 'array'
                      THEN spec OPERATOR(pg_catalog.#>) '{metadata,models}' END)
             WITH ORDINALITY AS m(v, ord)),
    usable AS (
        SELECT DISTINCT ON (e.id) e.id, e.entry_index FROM entries e
        WHERE e.id IS NOT NULL ORDER BY e.id, e.entry_index),
    listed AS (
        SELECT (pg_catalog.row_number() OVER (ORDER BY u.entry_index))::integer AS seq, u.id,
               u.entry_index
        FROM usable u)
    SELECT l.seq, l.id, l.entry_index, NULL::pg_catalog.jsonb FROM listed l
    UNION ALL
    SELECT 1, coalesce(CASE WHEN pg_catalog.jsonb_typeof(spec OPERATOR(pg_catalog.#>) '{metadata,model}')
                                     OPERATOR(pg_catalog.=) 'string'
                                 AND (spec OPERATOR(pg_catalog.#>>) '{metadata,model}')
                                     OPERATOR(pg_catalog.<>) ''
                            THEN spec OPERATOR(pg_catalog.#>>) '{metadata,model}' END,
                       CASE WHEN fallback_model OPERATOR(pg_catalog.<>) '' THEN fallback_model END,
                       'llama3.2-1b'), NULL, NULL
    WHERE NOT EXISTS (SELECT 1 FROM listed)
    UNION ALL
    SELECT NULL, NULL, e.entry_index, e.entry FROM entries e WHERE e.id IS NULL
$$;
