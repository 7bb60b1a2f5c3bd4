-- jobs_mirror_questions(spec): questions(J) of the mirror rule, in order, numbered from 1 in
-- seq ('default' when none); unusable entries come back with question_id NULL, for anomalies.
-- Read by the rule and jobs_mirror_dimensions (inlined into both: no SET search_path).
CREATE OR REPLACE FUNCTION public.jobs_mirror_questions(spec jsonb)
RETURNS TABLE (seq integer, question_id text, entry_index integer, entry jsonb)
LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 3
AS $$
    WITH entries AS (
        SELECT (q.ord - 1)::integer AS entry_index, q.v AS entry,
               CASE jsonb_typeof(q.v)
                   WHEN 'string' THEN nullif(q.v #>> '{}', '')
                   WHEN 'object' THEN CASE WHEN jsonb_typeof(q.v -> 'id') = 'string'
                                           THEN nullif(q.v ->> 'id', '') END
               END AS id
        FROM jsonb_array_elements(CASE WHEN jsonb_typeof(spec -> 'questions') = 'array'
                                       THEN spec -> 'questions' END) WITH ORDINALITY AS q(v, ord)),
    usable AS (
        SELECT DISTINCT ON (e.id) e.id, e.entry_index FROM entries e
        WHERE e.id IS NOT NULL ORDER BY e.id, e.entry_index),
    listed AS (
        SELECT (row_number() OVER (ORDER BY u.entry_index))::integer AS seq, u.id, u.entry_index
        FROM usable u)
    SELECT l.seq, l.id, l.entry_index, NULL::jsonb FROM listed l
    UNION ALL
    SELECT 1, 'default', NULL, NULL WHERE NOT EXISTS (SELECT 1 FROM listed)
    UNION ALL
    SELECT NULL, NULL, e.entry_index, e.entry FROM entries e WHERE e.id IS NULL
$$;
