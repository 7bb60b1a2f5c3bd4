-- region_results_mirror_rows(r, job, spec, only_pairs): THE MIRROR RULE (SPEC "The mirror
-- rule"), the one definition of what a region_results row yields in executions. A pure
-- function of the region result R and its job J's id and jobspec_data (NULL when the jobs row
-- is missing); it reads no table. Read by region_results_mirror_plan (triggers, backfill,
-- verify), the view executions_unified (region results not mirrored) and the benchmarks.
--
-- Returns one row per (model_id, question_id) pair (evidence 3: a per-pair result element;
-- 2: the runner's legacy single answer; 1: an expected pair without a result), with every
-- column the mirror owns, times as naive UTC; plus one row per anomaly (evidence NULL,
-- anomaly_kind and anomaly_detail set). only_pairs (keys jsonb_build_array(model_id,
-- question_id)::text) restricts the pair rows to those keys.
--
-- What it reads from J is exactly: J.id, spec.metadata.models, spec.metadata.model and
-- spec.questions; jobs_mirror_fingerprint hashes the same four values. Keep them in step.
CREATE OR REPLACE FUNCTION public.region_results_mirror_rows(
    r public.region_results,
    job integer,
    spec jsonb,
    only_pairs text[] DEFAULT NULL)
RETURNS TABLE (
    job_id integer,
    cross_region_execution_id uuid,
    region text,
    provider_id text,
    model_id text,
    question_id text,
    status text,
    started_at timestamp,
    completed_at timestamp,
    created_at timestamp,
    output_data jsonb,
    receipt_data jsonb,
    original_error text,
    evidence smallint,
    anomaly_kind text,
    anomaly_detail text)
LANGUAGE plpgsql STABLE PARALLEL SAFE ROWS 12
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH
    -- Status vocabulary: the region's and the elements' words into executions' five.
    vocab (word, mapped) AS (VALUES
        ('success', 'completed'), ('completed', 'completed'), ('succeeded', 'completed'),
        ('done', 'completed'), ('finished', 'completed'),
        ('failed', 'failed'), ('error', 'failed'), ('timeout', 'failed'),
        ('running', 'running'), ('processing', 'running'), ('retrying', 'running'),
        ('queued', 'pending'), ('pending', 'pending'),
        ('cancelled', 'cancelled'), ('canceled', 'cancelled')),
    -- models(J) and questions(J), in order (unusable spec entries have a NULL id).
    spec_models AS (SELECT * FROM public.jobs_mirror_models(spec, r.model_id)),
    spec_questions AS (SELECT * FROM public.jobs_mirror_questions(spec)),
    models AS (
        SELECT array_agg(m.model_id ORDER BY m.seq) AS list
        FROM spec_models m WHERE m.model_id IS NOT NULL),
    questions AS (
        SELECT array_agg(q.question_id ORDER BY q.seq) AS list
        FROM spec_questions q WHERE q.question_id IS NOT NULL),
    -- The region's own status, and whether it is finished.
    reg AS (
        SELECT coalesce(v.mapped, CASE WHEN r.completed_at IS NOT NULL THEN 'failed' ELSE 'pending' END) AS status,
               v.mapped IS NULL AS unknown
        FROM (VALUES (lower(btrim(coalesce(r.status, 'pending'))))) s(word)
        LEFT JOIN vocab v ON v.word = s.word),
    fin AS (SELECT reg.*, reg.status IN ('completed', 'failed', 'cancelled') AS finished FROM reg),
    elements AS (
        SELECT * FROM public.region_results_mirror_elements(r.execution_output -> 'executions')),
    -- The runner's own format: one answer in data, attributed to exactly one pair.
    legacy AS (
        SELECT CASE WHEN (r.execution_output #>> '{data,metadata,model}') = ANY (models.list)
                    THEN r.execution_output #>> '{data,metadata,model}'
                    ELSE models.list[1] END AS model_id,
               questions.list[1] AS question_id,
               r.execution_output -> 'data' AS data
        FROM models, questions
        WHERE jsonb_typeof(r.execution_output -> 'executions') IS DISTINCT FROM 'array'
          AND jsonb_typeof(r.execution_output -> 'data') <> 'null'),
    results AS (
        SELECT e.model_id, e.question_id, 3::smallint AS evidence, e.ordinality, e.element, NULL::jsonb AS data
        FROM elements e WHERE e.wins
        UNION ALL
        SELECT l.model_id, l.question_id, 2::smallint, NULL, NULL, l.data FROM legacy l),
    expected AS (
        SELECT mm.id AS model_id, qq.id AS question_id
        FROM models CROSS JOIN LATERAL unnest(models.list) AS mm(id),
             questions CROSS JOIN LATERAL unnest(questions.list) AS qq(id)),
    pairs AS (
        SELECT * FROM results
        UNION ALL
        SELECT x.model_id, x.question_id, 1::smallint, NULL, NULL, NULL
        FROM expected x
        WHERE NOT EXISTS (SELECT 1 FROM results y
                          WHERE y.model_id = x.model_id AND y.question_id = x.question_id)),
    wanted AS (
        SELECT p.* FROM pairs p
        WHERE only_pairs IS NULL
           OR jsonb_build_array(p.model_id, p.question_id)::text = ANY (only_pairs)),
    -- An element's times: ISO 8601 / RFC 3339 strings; without a zone they are UTC.
    times AS (
        SELECT w.ordinality, f.field, t.v,
               CASE
                   WHEN g IS NULL THEN NULL
                   WHEN g[1]::int < 1 THEN NULL
                   WHEN g[3]::int > extract(day FROM make_date(g[1]::int, g[2]::int, 1)
                                                    + interval '1 month - 1 day') THEN NULL
                   WHEN g[4] IS NULL THEN (t.v #>> '{}')::timestamp
                   ELSE (t.v #>> '{}')::timestamptz AT TIME ZONE 'UTC'
               END AS ts
        FROM wanted w
        CROSS JOIN (VALUES ('started_at'), ('completed_at')) f(field)
        CROSS JOIN LATERAL (SELECT w.element -> f.field AS v) t
        CROSS JOIN LATERAL (
            SELECT CASE WHEN jsonb_typeof(t.v) = 'string' THEN regexp_match(t.v #>> '{}',
                '^([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])'
                '(?:[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]+)?)?'
                '(Z|z|[+-](?:0[0-9]|1[0-5])(?::?[0-5][0-9])?)?)?$') END AS g) m
        WHERE w.evidence = 3 AND jsonb_typeof(t.v) <> 'null'),
    pair_rows AS (
        SELECT w.*,
               el_status.mapped AS element_status,
               el_status.unknown AS element_status_unknown,
               (SELECT ts FROM times WHERE times.ordinality = w.ordinality AND field = 'started_at') AS el_started,
               (SELECT ts FROM times WHERE times.ordinality = w.ordinality AND field = 'completed_at') AS el_completed
        FROM wanted w
        LEFT JOIN LATERAL (
            SELECT coalesce(v.mapped, CASE WHEN jsonb_typeof(w.element -> 'completed_at') <> 'null'
                                           THEN 'failed' ELSE 'pending' END) AS mapped,
                   v.mapped IS NULL AS unknown
            FROM (VALUES (lower(btrim(coalesce(w.element ->> 'status', 'pending'))))) s(word)
            LEFT JOIN vocab v ON v.word = s.word
        ) el_status ON w.evidence = 3),
    shaped AS (
        SELECT x.*,
               CASE WHEN x.status IN ('pending', 'running') THEN NULL
                    ELSE coalesce(x.el_completed, r.completed_at AT TIME ZONE 'UTC') END AS completed
        FROM (
            SELECT rw.*,
                   coalesce(rw.el_started, r.started_at AT TIME ZONE 'UTC') AS started,
                   CASE rw.evidence
                       WHEN 3 THEN CASE WHEN fin.finished AND rw.element_status IN ('pending', 'running')
                                        THEN 'failed' ELSE rw.element_status END
                       WHEN 2 THEN 'completed'
                       ELSE CASE WHEN NOT fin.finished THEN fin.status
                                 WHEN fin.status = 'cancelled' THEN 'cancelled'
                                 ELSE 'failed' END
                   END AS status,
                   CASE rw.evidence
                       WHEN 3 THEN CASE WHEN fin.finished AND rw.element_status IN ('pending', 'running')
                                        THEN 'no result recorded'
                                        ELSE nullif(rw.element ->> 'error', '') END
                       WHEN 1 THEN CASE WHEN fin.finished
                                        THEN coalesce(nullif(r.error_message, ''), 'no result recorded') END
                   END AS error,
                   fin.finished AND rw.evidence = 3 AND rw.element_status IN ('pending', 'running') AS unfinished_element
            FROM pair_rows rw CROSS JOIN fin
        ) x),
    too_long AS (
        SELECT s.* FROM shaped s
        WHERE length(s.model_id) > 50 OR length(s.question_id) > 255
           OR length(r.region) > 100 OR length(coalesce(r.provider_id, '')) > 255)
    -- The rows.
    SELECT job, r.cross_region_execution_id, r.region::text, coalesce(r.provider_id, '')::text,
           s.model_id, s.question_id, s.status, s.started, s.completed, s.started,
           CASE s.evidence WHEN 3 THEN nullif(s.element -> 'output', 'null')
                           WHEN 2 THEN s.data END,
           CASE WHEN s.evidence = 3 THEN nullif(s.element -> 'receipt', 'null') END,
           s.error, s.evidence, NULL::text, NULL::text
    FROM shaped s
    WHERE NOT EXISTS (SELECT 1 FROM too_long t WHERE t.model_id = s.model_id AND t.question_id = s.question_id)
    -- The anomalies (SPEC "Never fail the writer over data"), one per problem.
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           a.kind, left(a.detail, 300)
    FROM (
        SELECT 'missing_job' AS kind,
               'no jobs row has this run''s jobspec_id; models and questions fell back to defaults' AS detail
        WHERE job IS NULL
        UNION ALL
        SELECT 'malformed_models', format('jobspec_data.metadata.models is %s, not an array',
                                          jsonb_typeof(spec #> '{metadata,models}'))
        WHERE jsonb_typeof(spec #> '{metadata,models}') NOT IN ('array', 'null')
        UNION ALL
        SELECT 'malformed_models', format('jobspec_data.metadata.models[%s] is not a usable model id: %s',
                                          m.entry_index, left(m.entry::text, 100))
        FROM spec_models m WHERE m.model_id IS NULL
        UNION ALL
        SELECT 'malformed_questions', format('jobspec_data.questions is %s, not an array',
                                             jsonb_typeof(spec -> 'questions'))
        WHERE jsonb_typeof(spec -> 'questions') NOT IN ('array', 'null')
        UNION ALL
        SELECT 'malformed_questions', format('jobspec_data.questions[%s] is not a usable question id: %s',
                                             q.entry_index, left(q.entry::text, 100))
        FROM spec_questions q WHERE q.question_id IS NULL
        UNION ALL
        SELECT 'unknown_status', format('region status %s is not a known status; mapped to %s',
                                        quote_literal(left(r.status, 100)), reg.status)
        FROM reg WHERE reg.unknown
        UNION ALL
        SELECT 'malformed_executions', format('execution_output.executions is %s, not an array',
                                              jsonb_typeof(r.execution_output -> 'executions'))
        WHERE jsonb_typeof(r.execution_output -> 'executions') NOT IN ('array', 'null')
        UNION ALL
        SELECT 'invalid_element', format('execution_output.executions[%s] is skipped: %s',
                   e.ordinality - 1,
                   CASE WHEN jsonb_typeof(e.element) <> 'object' THEN 'not an object'
                        ELSE 'model_id and question_id must be non-empty strings' END)
        FROM elements e WHERE NOT e.usable AND only_pairs IS NULL
        UNION ALL
        SELECT 'unknown_status', format('element (%s, %s) status %s is not a known status; mapped to %s',
                   s.model_id, s.question_id, quote_literal(left(s.element ->> 'status', 100)), s.element_status)
        FROM shaped s WHERE s.element_status_unknown
        UNION ALL
        SELECT 'unfinished_element', format('element (%s, %s) is %s but the region is finished; recorded as failed',
                   s.model_id, s.question_id, s.element_status)
        FROM shaped s WHERE s.unfinished_element
        UNION ALL
        SELECT 'invalid_time', format('element (%s, %s) %s %s is not an ISO 8601 time; the region''s time is used',
                   w.model_id, w.question_id, t.field, left(t.v::text, 60))
        FROM times t JOIN wanted w ON w.ordinality = t.ordinality AND w.evidence = 3
        WHERE t.ts IS NULL
        UNION ALL
        SELECT 'id_too_long', format('pair (%s, %s) not mirrored: model_id over 50, question_id over 255, '
                                     'region over 100 or provider_id over 255 characters',
                                     left(t.model_id, 60), left(t.question_id, 60))
        FROM too_long t
    ) a;
END
$$;
