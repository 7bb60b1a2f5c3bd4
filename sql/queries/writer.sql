-- Queries of beaconsql.writer: the reference way to record a run, into jobs,
-- cross_region_executions and region_results only (SPEC "The writer"); the mirror triggers
-- derive executions. Parameters are psycopg named placeholders; no literal percent signs here.

-- name: create_job
-- Insert a jobs row as the runner's JobsRepo.CreateJob does (runner-app.md section 2.1).
INSERT INTO public.jobs (jobspec_id, jobspec_data, status, created_at, updated_at)
VALUES (%(jobspec_id)s, %(jobspec_data)s, %(status)s,
        (%(created_at)s::timestamptz AT TIME ZONE 'UTC'), (now() AT TIME ZONE 'UTC'))
RETURNING id;

-- name: start_run
-- Insert a cross_region_executions row, status running (runner-app.md section 2.1).
INSERT INTO public.cross_region_executions
    (id, jobspec_id, total_regions, min_regions_required, min_success_rate, status, started_at)
VALUES (%(run_id)s, %(jobspec_id)s, %(total_regions)s, %(min_regions_required)s,
        %(min_success_rate)s, 'running', %(started_at)s)
RETURNING id;

-- name: start_region
-- Insert a region_results row, status running (runner-app.md section 2.4, first INSERT).
INSERT INTO public.region_results
    (id, cross_region_execution_id, region, provider_id, status, started_at)
VALUES (%(region_result_id)s, %(run_id)s, %(region)s, %(provider_id)s, 'running', %(started_at)s)
RETURNING id;

-- name: record_pair
-- Append one pair's element to execution_output.executions, or replace the element of the
-- same (model_id, question_id) in place, in one statement: concurrent calls for pairs of one
-- region serialise on the row and each re-reads the latest version, so none is lost.
UPDATE public.region_results r
SET execution_output = jsonb_set(
        CASE WHEN jsonb_typeof(r.execution_output) = 'object' THEN r.execution_output
             ELSE '{}'::jsonb END,
        '{executions}',
        CASE
            WHEN EXISTS (SELECT 1
                         FROM jsonb_array_elements(r.execution_output -> 'executions') el
                         WHERE jsonb_typeof(r.execution_output -> 'executions') = 'array'
                           AND el ->> 'model_id' = %(model_id)s
                           AND el ->> 'question_id' = %(question_id)s)
            THEN (SELECT jsonb_agg(CASE WHEN el ->> 'model_id' = %(model_id)s
                                         AND el ->> 'question_id' = %(question_id)s
                                        THEN %(element)s::jsonb ELSE el END ORDER BY ord)
                  FROM jsonb_array_elements(r.execution_output -> 'executions')
                       WITH ORDINALITY AS t(el, ord))
            WHEN jsonb_typeof(r.execution_output -> 'executions') = 'array'
            THEN (r.execution_output -> 'executions') || jsonb_build_array(%(element)s::jsonb)
            ELSE jsonb_build_array(%(element)s::jsonb)
        END)
WHERE r.id = %(region_result_id)s
RETURNING r.id;

-- name: finish_region
-- Close a region as the runner's final region_results UPDATE does (runner-app.md sections
-- 2.4, 5): status success when at least one pair completed (else failed) unless given,
-- completed_at, duration_ms, error_message ('' on success, 'all executions failed' when
-- nothing completed), metadata counts, and execution_output.data = the first completed
-- answer, for readers of the legacy format. total_executions counts the pairs planned (models(J)
-- x questions(J), as the mirror rule reads them) and any other pair recorded.
WITH current AS MATERIALIZED (
    SELECT r.id,
           (SELECT count(*) FROM (
                SELECT m.model_id, q.question_id
                FROM public.jobs_mirror_models(j.jobspec_data, r.model_id) m,
                     public.jobs_mirror_questions(j.jobspec_data) q
                WHERE m.model_id IS NOT NULL AND q.question_id IS NOT NULL
                UNION
                SELECT e.model_id, e.question_id
                FROM public.region_results_mirror_elements(r.execution_output -> 'executions') e
                WHERE e.wins) pairs) AS total,
           (SELECT count(*) FROM public.region_results_mirror_elements(r.execution_output -> 'executions') e
            WHERE e.wins AND lower(e.element ->> 'status') = 'completed') AS succeeded,
           (SELECT e.element -> 'output' FROM public.region_results_mirror_elements(r.execution_output -> 'executions') e
            WHERE e.wins AND lower(e.element ->> 'status') = 'completed'
            ORDER BY e.ordinality LIMIT 1) AS first_output
    FROM public.region_results r
    JOIN public.cross_region_executions x ON x.id = r.cross_region_execution_id
    LEFT JOIN public.jobs j ON j.jobspec_id = x.jobspec_id
    WHERE r.id = %(region_result_id)s
    FOR NO KEY UPDATE OF r)
UPDATE public.region_results r
SET status = coalesce(%(status)s, CASE WHEN c.succeeded > 0 THEN 'success' ELSE 'failed' END),
    completed_at = %(completed_at)s,
    duration_ms = (extract(epoch FROM %(completed_at)s::timestamptz - r.started_at) * 1000)::bigint,
    error_message = coalesce(%(error_message)s,
                             CASE WHEN c.succeeded > 0 THEN '' ELSE 'all executions failed' END),
    metadata = coalesce(r.metadata, '{}'::jsonb) || jsonb_build_object(
        'success_count', c.succeeded,
        'failure_count', greatest(c.total - c.succeeded, 0),
        'total_executions', c.total),
    execution_output = CASE
        WHEN c.first_output IS NULL THEN r.execution_output
        ELSE jsonb_set(coalesce(r.execution_output, '{}'::jsonb), '{data}', c.first_output)
                 || jsonb_build_object('hash', '') END
FROM current c
WHERE r.id = c.id
RETURNING r.status, c.succeeded, greatest(c.total - c.succeeded, 0), c.total;

-- name: finish_run
-- Close a run as the runner does after all regions (runner-app.md section 2.4): completed when
-- successful regions >= min_regions_required and their rate >= min_success_rate, partial when
-- only the first holds, else failed.
UPDATE public.cross_region_executions x
SET success_count = s.succeeded,
    failure_count = s.regions - s.succeeded,
    status = CASE
        WHEN s.succeeded >= x.min_regions_required
             AND s.succeeded::numeric / greatest(x.total_regions, 1) >= x.min_success_rate THEN 'completed'
        WHEN s.succeeded >= x.min_regions_required THEN 'partial'
        ELSE 'failed' END,
    completed_at = %(completed_at)s,
    duration_ms = (extract(epoch FROM %(completed_at)s::timestamptz - x.started_at) * 1000)::bigint
FROM (SELECT count(*) FILTER (WHERE r.status = 'success') AS succeeded,
             greatest(count(*), max(x2.total_regions)) AS regions
      FROM public.cross_region_executions x2
      LEFT JOIN public.region_results r ON r.cross_region_execution_id = x2.id
      WHERE x2.id = %(run_id)s) s
WHERE x.id = %(run_id)s
RETURNING x.status, x.jobspec_id, x.success_count, x.failure_count;

-- name: set_job_status
-- The jobs row follows its run: partial is stored as running, since chk_jobs_status has no
-- partial (runner-app.md sections 2.4, 9).
UPDATE public.jobs
SET status = CASE %(run_status)s WHEN 'completed' THEN 'completed'
                                 WHEN 'failed' THEN 'failed'
                                 ELSE 'running' END,
    updated_at = now() AT TIME ZONE 'UTC'
WHERE jobspec_id = %(jobspec_id)s;
