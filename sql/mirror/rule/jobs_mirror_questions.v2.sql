-- Version 2 of jobs_mirror_questions (revision 0010): version 1 with every function, operator
-- and type schema-qualified (NULLIF and CASE x WHEN spelt out), for the reason given in
-- jobs_mirror_models.v2.sql.

-- jobs_mirror_questions(spec): questions(J) of the mirror rule, in order, numbered from 1 in
-- seq ('default' when none); unusable entries come back with question_id NULL, for anomalies.
-- Read by the rule and jobs_mirror_dimensions (inlined into both: no SET search_path).
CREATE OR REPLACE FUNCTION public.jobs_mirror_questions(spec jsonb)
RETURNS TABLE (seq integer, question_id text, entry_index integer, entry jsonb)
LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 3
AS $$
    WITH entries AS (
        SELECT (q.ord OPERATOR(pg_catalog.-) 1)::integer AS entry_index, q.v AS entry,
               CASE
                   WHEN pg_catalog.jsonb_typeof(q.v) OPERATOR(pg_catalog.=) 'string'
                        AND (q.v OPERATOR(pg_catalog.#>>) '{}') OPERATOR(pg_catalog.<>) ''
                       THEN q.v OPERATOR(pg_catalog.#>>) '{}'
                   WHEN pg_catalog.jsonb_typeof(q.v) OPERATOR(pg_catalog.=) 'object'
                        AND pg_catalog.jsonb_typeof(q.v OPERATOR(pg_catalog.->) 'id') OPERATOR(pg_catalog.=) 'string'
                        AND (q.v OPERATOR(pg_catalog.->>) 'id') OPERATOR(pg_catalog.<>) ''
                       THEN q.v OPERATOR(pg_catalog.->>) 'id'
               END AS id
        FROM pg_catalog.jsonb_array_elements(
                 CASE WHEN pg_catalog.jsonb_typeof(spec OPERATOR(pg_catalog.->) 'questions')
                               OPERATOR(pg_catalog.=) 'array'
                      THEN spec OPERATOR(pg_catalog.->) 'questions' END)
             WITH ORDINALITY AS q(v, ord)),
    usable AS (
        SELECT DISTINCT ON (e.id) e.id, e.entry_index FROM entries e
        WHERE e.id IS NOT NULL ORDER BY e.id, e.entry_index),
    listed AS (
        SELECT (pg_catalog.row_number() OVER (ORDER BY u.entry_index))::integer AS seq, u.id,
               u.entry_index
        FROM usable u)
    SELECT l.seq, l.id, l.entry_index, NULL::pg_catalog.jsonb FROM listed l
    UNION ALL
    SELECT 1, 'default', NULL, NULL WHERE NOT EXISTS (SELECT 1 FROM listed)
    UNION ALL
    SELECT NULL, NULL, e.entry_index, e.entry FROM entries e WHERE e.id IS NULL
$$;
