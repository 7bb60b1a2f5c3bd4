-- region_results_mirror_rows(r, job, spec, job_status, only_pairs): THE MIRROR RULE (SPEC "The
-- mirror rule"), the one definition of what a region result yields in executions: one row per
-- pair (stored: evidence 3 or 2, or evidence 1 once r is finished; else a placeholder the view
-- derives), and one row per anomaly (mirror_row NULL). A pure function of r and its job's id,
-- jobspec_data and status (NULL when the jobs row is missing); only_pairs (keys
-- jsonb_build_array(model_id, question_id)::text) restricts the pair rows. Read by the plan,
-- the view, the detach and forget triggers and the benchmarks. What it reads of the job's spec
-- is hashed by jobs_mirror_fingerprint; its status only shapes placeholders, never stored rows.
CREATE OR REPLACE FUNCTION public.region_results_mirror_rows(
    r public.region_results,
    job integer,
    spec jsonb,
    job_status text,
    only_pairs text[] DEFAULT NULL)
RETURNS TABLE (mirror_row public.executions_mirror_row,
               stored boolean,
               anomaly_kind public.executions_mirror_anomaly,
               anomaly_detail text)
LANGUAGE plpgsql STABLE PARALLEL SAFE ROWS 12
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET jit = off
-- anomaly details quote times: the same text in every session
SET DateStyle = 'ISO, YMD'
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH
    spec_models AS (SELECT * FROM public.jobs_mirror_models(spec, r.model_id::text)),
    spec_questions AS (SELECT * FROM public.jobs_mirror_questions(spec)),
    models AS (
        SELECT array_agg(m.model_id ORDER BY m.seq) AS list
        FROM spec_models m WHERE m.model_id IS NOT NULL),
    questions AS (
        SELECT array_agg(q.question_id ORDER BY q.seq) AS list
        FROM spec_questions q WHERE q.question_id IS NOT NULL),
    -- The region: its status in the executions vocabulary, whether finished, its times.
    reg AS (
        SELECT st.*, public.executions_mirror_finished(st.status) AS finished,
               CASE WHEN public.executions_mirror_readable(st.started_raw) THEN st.started_raw END AS started,
               CASE WHEN public.executions_mirror_readable(st.completed_raw) THEN st.completed_raw END AS completed
        FROM (SELECT public.region_results_mirror_region_status(r.status::text, r.completed_at) AS status,
                     public.executions_mirror_status(r.status::text) IS NULL AS unknown,
                     r.started_at AT TIME ZONE 'UTC' AS started_raw,
                     r.completed_at AT TIME ZONE 'UTC' AS completed_raw
              OFFSET 0) st),
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
        SELECT e.model_id, e.question_id, 3::smallint AS evidence, e.element, NULL::jsonb AS data
        FROM elements e WHERE e.wins
        UNION ALL
        SELECT l.model_id, l.question_id, 2::smallint, NULL, l.data FROM legacy l),
    expected AS (
        SELECT mm.id AS model_id, qq.id AS question_id
        FROM models CROSS JOIN LATERAL unnest(models.list) AS mm(id),
             questions CROSS JOIN LATERAL unnest(questions.list) AS qq(id)),
    pairs AS (
        SELECT * FROM results
        UNION ALL
        SELECT x.model_id, x.question_id, 1::smallint, NULL, NULL
        FROM expected x
        WHERE NOT EXISTS (SELECT 1 FROM results y
                          WHERE y.model_id = x.model_id AND y.question_id = x.question_id)),
    shaped AS (
        SELECT p.model_id, p.question_id, p.evidence, p.element,
               CASE p.evidence
                   WHEN 3 THEN el.status
                   WHEN 2 THEN 'completed'
                   ELSE CASE WHEN reg.finished AND reg.status = 'cancelled' THEN 'cancelled'
                             WHEN reg.finished THEN 'failed'
                             -- the runner's cancel updates only rows that exist
                             WHEN public.executions_mirror_status(job_status) = 'cancelled' THEN 'cancelled'
                             ELSE reg.status END
               END AS status,
               CASE WHEN p.evidence = 3 THEN el.started_at ELSE reg.started END AS started,
               CASE WHEN p.evidence = 3 THEN el.completed_at
                    WHEN p.evidence = 2 OR reg.finished THEN reg.completed
               END AS completed,
               CASE p.evidence WHEN 3 THEN el.output_data WHEN 2 THEN p.data END AS output,
               el.receipt_data AS receipt,
               CASE p.evidence
                   WHEN 3 THEN el.original_error
                   WHEN 1 THEN CASE WHEN reg.finished
                                    THEN coalesce(nullif(r.error_message, ''), 'no result recorded') END
               END AS error,
               p.evidence >= 2 OR reg.finished AS stored,
               el.element_status, el.status_unknown, el.invalid_started_at,
               el.invalid_completed_at, el.unreadable_started_at, el.unreadable_completed_at,
               el.unfinished,
               length(p.model_id) > 50 OR length(p.question_id) > 255 OR length(r.region) > 100
                   OR length(coalesce(r.provider_id, '')) > 255 AS too_long
        FROM pairs p
        CROSS JOIN reg
        LEFT JOIN LATERAL public.region_results_mirror_element_row(
                              reg.status, reg.started_raw, reg.completed_raw, p.element) el
               ON p.evidence = 3
        WHERE only_pairs IS NULL
           OR jsonb_build_array(p.model_id, p.question_id)::text = ANY (only_pairs))
    -- The rows.
    SELECT ROW(job, r.cross_region_execution_id, r.region::text, coalesce(r.provider_id, '')::text,
               s.model_id, s.question_id, s.status, s.started, s.completed, s.started,
               s.output, s.receipt, s.error, r.id, s.evidence)::public.executions_mirror_row,
           s.stored, NULL::public.executions_mirror_anomaly, NULL::text
    FROM shaped s
    WHERE NOT s.too_long
    -- The anomalies (SPEC "Never fail the writer over data"), one per problem.
    UNION ALL
    SELECT NULL::public.executions_mirror_row, NULL::boolean, a.kind, left(a.detail, 300)
    FROM (
        -- about the job, its spec and the region result as a whole
        SELECT v.kind, v.detail
        FROM reg CROSS JOIN LATERAL (VALUES
            ('missing_job'::public.executions_mirror_anomaly, CASE WHEN job IS NULL THEN
                'no jobs row has this run''s jobspec_id; models and questions fell back to defaults' END),
            ('malformed_models', CASE WHEN jsonb_typeof(spec #> '{metadata,models}') NOT IN ('array', 'null') THEN
                format('jobspec_data.metadata.models is %s, not an array', jsonb_typeof(spec #> '{metadata,models}')) END),
            ('malformed_questions', CASE WHEN jsonb_typeof(spec -> 'questions') NOT IN ('array', 'null') THEN
                format('jobspec_data.questions is %s, not an array', jsonb_typeof(spec -> 'questions')) END),
            ('unknown_status', CASE WHEN reg.unknown THEN
                format('region status %s is not a known status; mapped to %s',
                       quote_literal(left(r.status, 100)), reg.status) END),
            ('malformed_executions', CASE WHEN jsonb_typeof(r.execution_output -> 'executions') NOT IN ('array', 'null') THEN
                format('execution_output.executions is %s, not an array',
                       jsonb_typeof(r.execution_output -> 'executions')) END),
            ('unreadable_time', CASE WHEN reg.started IS NULL THEN
                format('region started_at %s UTC is outside what clients can read; shown as null',
                       reg.started_raw) END),
            ('unreadable_time', CASE WHEN reg.completed IS NULL AND r.completed_at IS NOT NULL THEN
                format('region completed_at %s UTC is outside what clients can read; shown as null',
                       reg.completed_raw) END)
        ) v(kind, detail)
        WHERE v.detail IS NOT NULL
        UNION ALL
        -- unusable entries of the spec's lists and of the elements
        SELECT 'malformed_models', format('jobspec_data.metadata.models[%s] is not a usable model id: %s',
                                          m.entry_index, left(m.entry::text, 100))
        FROM spec_models m WHERE m.model_id IS NULL
        UNION ALL
        SELECT 'malformed_questions', format('jobspec_data.questions[%s] is not a usable question id: %s',
                                             q.entry_index, left(q.entry::text, 100))
        FROM spec_questions q WHERE q.question_id IS NULL
        UNION ALL
        SELECT 'invalid_element', format('execution_output.executions[%s] is skipped: %s',
                   e.ordinality - 1,
                   CASE WHEN jsonb_typeof(e.element) <> 'object' THEN 'not an object'
                        ELSE 'model_id and question_id must be non-empty strings' END)
        FROM elements e WHERE NOT e.usable AND only_pairs IS NULL
        UNION ALL
        -- about one pair
        SELECT v.kind, v.detail
        FROM shaped s CROSS JOIN LATERAL (VALUES
            ('unknown_status'::public.executions_mirror_anomaly, CASE WHEN s.status_unknown THEN
                format('element (%s, %s) status %s is not a known status; mapped to %s',
                       s.model_id, s.question_id, quote_literal(left(s.element ->> 'status', 100)),
                       s.element_status) END),
            ('unfinished_element', CASE WHEN s.unfinished THEN
                format('element (%s, %s) is %s but the region is finished; recorded as failed',
                       s.model_id, s.question_id, s.element_status) END),
            ('invalid_time', CASE WHEN s.invalid_started_at THEN
                format('element (%s, %s) started_at %s is not an ISO 8601 time; the region''s time is used',
                       s.model_id, s.question_id, left((s.element -> 'started_at')::text, 60)) END),
            ('invalid_time', CASE WHEN s.invalid_completed_at THEN
                format('element (%s, %s) completed_at %s is not an ISO 8601 time; the region''s time is used',
                       s.model_id, s.question_id, left((s.element -> 'completed_at')::text, 60)) END),
            ('unreadable_time', CASE WHEN s.unreadable_started_at THEN
                format('element (%s, %s) started_at %s is outside what clients can read; the region''s time is used',
                       s.model_id, s.question_id, left((s.element -> 'started_at')::text, 60)) END),
            ('unreadable_time', CASE WHEN s.unreadable_completed_at THEN
                format('element (%s, %s) completed_at %s is outside what clients can read; the region''s time is used',
                       s.model_id, s.question_id, left((s.element -> 'completed_at')::text, 60)) END),
            ('id_too_long', CASE WHEN s.too_long THEN
                format('pair (%s, %s) not mirrored: model_id over 50, question_id over 255, '
                       'region over 100 or provider_id over 255 characters',
                       left(s.model_id, 60), left(s.question_id, 60)) END)
        ) v(kind, detail)
        WHERE v.detail IS NOT NULL
    ) a;
END
$$;
