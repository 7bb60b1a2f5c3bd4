-- The portal's reads, against executions_unified and jobs only (SPEC "Portal reads"), with
-- the runner's field names (runner-app.md section 3). Read by beaconsql.portal. The reads of
-- one job or one execution id select the view's rows through executions_unified_of_job and
-- executions_unified_of_execution, whose plan of the view each connection keeps
-- (sql/views/executions_unified_scoped.v1.sql).
-- Parameters are psycopg named placeholders; no literal percent signs here.
--
-- The reads of whole rows select {execution_columns}: the columns of execution_columns below
-- (beaconsql.portal.ExecutionRow), spliced in by beaconsql.portal. Times come as naive UTC
-- (AT TIME ZONE 'UTC'), so that no session TimeZone can push a time the view shows past what
-- a client can hold; JSON columns come as text, so that SQL NULL and JSON null stay apart, as
-- they do for the runner, and so that the portal decodes them (at any depth).

-- name: execution_columns
-- A whole row of the view as the portal reads it (a fragment, not a query).
u.execution_id, u.source, u.jobspec_id, u.status, u.region, u.provider_id,
       u.started_at AT TIME ZONE 'UTC' AS started_at,
       u.completed_at AT TIME ZONE 'UTC' AS completed_at,
       u.created_at AT TIME ZONE 'UTC' AS created_at,
       u.output_data::text AS output_json, u.receipt_data::text AS receipt_json,
       u.model_id, u.question_id, u.system_prompt, u.response_classification,
       u.is_substantive, u.is_content_refusal, u.response_length,
       u.retry_count, u.max_retries, u.last_retry_at AT TIME ZONE 'UTC' AS last_retry_at,
       u.retry_history::text AS retry_history_json, u.original_error, u.evidence, u.duration_ms

-- name: job
-- The jobs row of a jobspec id: its spec (as text), status and creation time (section 3.2's
-- "job"); a creation time a client cannot hold is NULL, as the view's times are.
SELECT j.id, j.jobspec_id, j.jobspec_data::text AS jobspec_json, j.status,
       CASE WHEN public.executions_mirror_readable(j.created_at) THEN j.created_at END
           AS created_at
FROM public.jobs j
WHERE j.jobspec_id = %(jobspec_id)s;

-- name: executions
-- GET /api/v1/jobs/{id}/executions/all and ?include=executions: the view's rows of one job,
-- newest first (created_at DESC as the runner orders it, NULLs first; then execution_id DESC
-- NULLS LAST, region, model, question), optionally paged (LIMIT NULL means all).
SELECT {execution_columns}
FROM public.executions_unified_of_job(%(jobspec_id)s::text) u
ORDER BY u.created_at DESC, u.execution_id DESC NULLS LAST, u.region, u.model_id, u.question_id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: executions_page
-- GET /api/v1/executions: a page of every row of the view, newest first (the order of
-- `executions`); its total is executions_count. The stored rows are read from %(since)s on
-- (and those without a readable created_at, which come first), through the index on the
-- view's created_at; the rows the view derives, all of them (one pass over region_results).
-- beaconsql.portal picks `since` so that the window holds the page (executions_in_window).
SELECT {execution_columns}
FROM public.executions_unified u
WHERE (u.source <> 'derived' AND (u.created_at >= %(since)s OR u.created_at IS NULL))
   OR u.source = 'derived'
ORDER BY u.created_at DESC, u.execution_id DESC NULLS LAST, u.region, u.model_id, u.question_id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: executions_in_window
-- How many stored rows executions_page's window from %(since)s holds, up to %(end)s.
SELECT count(*)
FROM (SELECT 1 FROM public.executions_unified u
      WHERE u.source <> 'derived' AND (u.created_at >= %(since)s OR u.created_at IS NULL)
      LIMIT %(end)s) w;

-- name: executions_page_since
-- Where executions_page's window may start: the creation time of the %(jobs)s-th newest job
-- (a job's rows are written after it); no row when there are fewer jobs.
SELECT j.created_at AT TIME ZONE 'UTC'
FROM public.jobs j
WHERE public.executions_mirror_readable(j.created_at)
ORDER BY j.created_at DESC
OFFSET %(jobs)s - 1 LIMIT 1;

-- name: executions_count
-- GET /api/v1/executions: how many rows the view shows (the list's total).
SELECT count(*) FROM public.executions_unified;

-- name: execution
-- GET /api/v1/executions/{id}/details: the row the view shows with this execution id; none
-- when the id is unknown or its row is hidden by a better candidate of its key.
SELECT {execution_columns}
FROM public.executions_unified_of_execution(%(execution_id)s::bigint) u;

-- name: execution_receipt
-- GET /api/v1/executions/{id}/receipt: the receipt of the row the view shows with this id
-- (NULL when it has none; no row when the id is unknown or hidden).
SELECT u.receipt_data::text AS receipt_json
FROM public.executions_unified_of_execution(%(execution_id)s::bigint) u;

-- name: execution_bias_score
-- GET /api/v1/executions/{id}/bias-score: output_data's bias_score of the row the view shows
-- with this id (NULL when its output is not an object holding one; no row when the id is
-- unknown or hidden).
SELECT (u.output_data -> 'bias_score')::text AS bias_score_json
FROM public.executions_unified_of_execution(%(execution_id)s::bigint) u;

-- name: cross_region
-- GET /api/v1/executions/{jobId}/cross-region?model_id=: the newest row per region of one
-- job and model (the runner orders by region, created_at DESC and keeps the first per region).
SELECT DISTINCT ON (u.region)
       {execution_columns}
FROM public.executions_unified_of_job(%(jobspec_id)s::text) u
WHERE u.model_id = %(model_id)s
ORDER BY u.region, u.created_at DESC NULLS LAST, u.execution_id DESC NULLS LAST, u.question_id;

-- name: cross_region_by_question
-- The same with &question_id=: the newest row per region of one job, model and question.
SELECT DISTINCT ON (u.region)
       {execution_columns}
FROM public.executions_unified_of_job(%(jobspec_id)s::text) u
WHERE u.model_id = %(model_id)s
  AND u.question_id = %(question_id)s
ORDER BY u.region, u.created_at DESC NULLS LAST, u.execution_id DESC NULLS LAST;

-- name: cross_region_diff
-- GET /api/v1/executions/{jobId}/cross-region-diff: the completed rows of one job, by region,
-- newest first within a region.
SELECT {execution_columns}
FROM public.executions_unified_of_job(%(jobspec_id)s::text) u
WHERE u.status = 'completed'
ORDER BY u.region, u.created_at DESC NULLS LAST, u.execution_id DESC NULLS LAST, u.model_id,
         u.question_id;

-- name: diffs
-- GET /api/v1/diffs: the jobs with at least two distinct regions among their completed rows
-- (one aggregate over the view), newest job first, with their jobs row's creation time (NULL
-- for a run without a jobs row, or a time a client cannot hold).
SELECT d.jobspec_id, d.regions,
       CASE WHEN public.executions_mirror_readable(j.created_at) THEN j.created_at END
           AS created_at
FROM (SELECT u.jobspec_id, count(DISTINCT u.region) AS regions
      FROM public.executions_unified u
      WHERE u.status = 'completed'
      GROUP BY u.jobspec_id
      HAVING count(DISTINCT u.region) >= 2) d
LEFT JOIN public.jobs j ON j.jobspec_id = d.jobspec_id
WHERE d.jobspec_id IS NOT NULL
ORDER BY j.created_at DESC NULLS LAST, d.jobspec_id
LIMIT %(limit)s;

-- name: progress_dimensions
-- What a job is expected to run: regions = constraints.regions (usable strings), models(J)
-- and questions(J) exactly as the mirror rule reads them.
SELECT d.regions, d.models, d.questions
FROM public.jobs j
CROSS JOIN LATERAL public.jobs_mirror_dimensions(j.jobspec_data) d
WHERE j.jobspec_id = %(jobspec_id)s;

-- name: progress_rows
-- The view's rows of one job, one per key: what progress counts.
SELECT u.region, u.model_id, u.question_id, u.status
FROM public.executions_unified_of_job(%(jobspec_id)s::text) u;
