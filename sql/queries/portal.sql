-- The portal's reads, against executions_unified and jobs only (SPEC "Portal reads"), with
-- the runner's field names (runner-app.md section 3). Read by beaconsql.portal.
-- Parameters are psycopg named placeholders; no literal percent signs here.

-- name: job
-- The jobs row of a jobspec id: its spec, status and creation time (section 3.2's "job").
SELECT j.id, j.jobspec_id, j.jobspec_data, j.status, j.created_at
FROM public.jobs j
WHERE j.jobspec_id = %(jobspec_id)s;

-- name: executions
-- GET /api/v1/jobs/{id}/executions/all and ?include=executions: the view's rows of one job,
-- newest first (created_at DESC as the runner orders it, NULLs first; then execution_id DESC
-- NULLS LAST, region, model, question), optionally paged (LIMIT NULL means all). JSON columns
-- come as text, so that SQL NULL and JSON null stay apart, as they do for the runner.
SELECT u.execution_id, u.source, u.jobspec_id, u.status, u.region, u.provider_id,
       u.started_at, u.completed_at, u.created_at, u.output_data::text AS output_json,
       u.receipt_data::text AS receipt_json, u.model_id, u.question_id, u.system_prompt,
       u.response_classification, u.is_substantive, u.is_content_refusal, u.response_length,
       u.retry_count, u.max_retries, u.last_retry_at, u.retry_history::text AS retry_history_json,
       u.original_error, u.evidence, u.duration_ms
FROM public.executions_unified u
WHERE u.jobspec_id = %(jobspec_id)s
ORDER BY u.created_at DESC, u.execution_id DESC NULLS LAST, u.region, u.model_id, u.question_id
LIMIT %(limit)s OFFSET %(offset)s;

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
FROM public.executions_unified u
WHERE u.jobspec_id = %(jobspec_id)s;
