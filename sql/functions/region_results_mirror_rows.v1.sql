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
-- One generic plan per statement, cached for the session: re-planning these statements on
-- every call (custom plans) costs more than running them.
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH
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
        SELECT st.status, st.status IN ('completed', 'failed', 'cancelled') AS finished,
               public.executions_mirror_status(r.status) IS NULL AS unknown
        FROM (SELECT public.region_results_mirror_region_status(r) AS status) st),
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
                   ELSE CASE WHEN NOT reg.finished THEN reg.status
                             WHEN reg.status = 'cancelled' THEN 'cancelled'
                             ELSE 'failed' END
               END AS status,
               coalesce(el.started_at, r.started_at AT TIME ZONE 'UTC') AS started,
               CASE WHEN p.evidence = 3 THEN el.completed_at
                    WHEN p.evidence = 2 OR reg.finished THEN r.completed_at AT TIME ZONE 'UTC'
               END AS completed,
               CASE p.evidence WHEN 3 THEN el.output_data WHEN 2 THEN p.data END AS output,
               el.receipt_data AS receipt,
               CASE p.evidence
                   WHEN 3 THEN el.original_error
                   WHEN 1 THEN CASE WHEN reg.finished
                                    THEN coalesce(nullif(r.error_message, ''), 'no result recorded') END
               END AS error,
               el.element_status, el.status_unknown, el.invalid_started_at,
               el.invalid_completed_at, el.unfinished,
               length(p.model_id) > 50 OR length(p.question_id) > 255 OR length(r.region) > 100
                   OR length(coalesce(r.provider_id, '')) > 255 AS too_long
        FROM pairs p
        CROSS JOIN reg
        LEFT JOIN LATERAL public.region_results_mirror_element_row(r, reg.status, p.element) el
               ON p.evidence = 3
        WHERE only_pairs IS NULL
           OR jsonb_build_array(p.model_id, p.question_id)::text = ANY (only_pairs))
    -- The rows.
    SELECT job, r.cross_region_execution_id, r.region::text, coalesce(r.provider_id, '')::text,
           s.model_id, s.question_id, s.status, s.started, s.completed, s.started,
           s.output, s.receipt, s.error, s.evidence, NULL::text, NULL::text
    FROM shaped s
    WHERE NOT s.too_long
    -- The anomalies (SPEC "Never fail the writer over data"), one per problem.
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           a.kind, left(a.detail, 300)
    FROM (
        -- about the job, its spec and the region result as a whole
        SELECT v.kind, v.detail
        FROM reg CROSS JOIN LATERAL (VALUES
            ('missing_job', CASE WHEN job IS NULL THEN
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
                       jsonb_typeof(r.execution_output -> 'executions')) END)
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
            ('unknown_status', CASE WHEN s.status_unknown THEN
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
            ('id_too_long', CASE WHEN s.too_long THEN
                format('pair (%s, %s) not mirrored: model_id over 50, question_id over 255, '
                       'region over 100 or provider_id over 255 characters',
                       left(s.model_id, 60), left(s.question_id, 60)) END)
        ) v(kind, detail)
        WHERE v.detail IS NOT NULL
    ) a;
END
$$;
