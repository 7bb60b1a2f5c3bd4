-- jobs_mirror_models(spec, fallback_model): models(J) of the mirror rule, in order, numbered from
-- 1 in seq; unusable entries of metadata.models come back with model_id NULL, for anomalies.
-- Read by the rule and jobs_mirror_dimensions (inlined into both: no SET search_path).
CREATE OR REPLACE FUNCTION public.jobs_mirror_models(spec jsonb, fallback_model text DEFAULT NULL)
RETURNS TABLE (seq integer, model_id text, entry_index integer, entry jsonb)
LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 3
AS $$
    WITH entries AS (
        SELECT (m.ord - 1)::integer AS entry_index, m.v AS entry,
               CASE jsonb_typeof(m.v)
                   WHEN 'string' THEN nullif(m.v #>> '{}', '')
                   WHEN 'object' THEN CASE
                       WHEN jsonb_typeof(m.v -> 'id') = 'string' AND m.v ->> 'id' <> '' THEN m.v ->> 'id'
                       WHEN jsonb_typeof(m.v -> 'model_id') = 'string' AND m.v ->> 'model_id' <> '' THEN m.v ->> 'model_id'
                       WHEN jsonb_typeof(m.v -> 'name') = 'string' AND m.v ->> 'name' <> '' THEN m.v ->> 'name'
                   END
               END AS id
        FROM jsonb_array_elements(CASE WHEN jsonb_typeof(spec #> '{metadata,models}') = 'array'
                                       THEN spec #> '{metadata,models}' END) WITH ORDINALITY AS m(v, ord)),
    usable AS (
        SELECT DISTINCT ON (e.id) e.id, e.entry_index FROM entries e
        WHERE e.id IS NOT NULL ORDER BY e.id, e.entry_index),
    listed AS (
        SELECT (row_number() OVER (ORDER BY u.entry_index))::integer AS seq, u.id, u.entry_index
        FROM usable u)
    SELECT l.seq, l.id, l.entry_index, NULL::jsonb FROM listed l
    UNION ALL
    SELECT 1, coalesce(CASE WHEN jsonb_typeof(spec #> '{metadata,model}') = 'string'
                            THEN nullif(spec #>> '{metadata,model}', '') END,
                       nullif(fallback_model, ''), 'llama3.2-1b'), NULL, NULL
    WHERE NOT EXISTS (SELECT 1 FROM listed)
    UNION ALL
    SELECT NULL, NULL, e.entry_index, e.entry FROM entries e WHERE e.id IS NULL
$$;
