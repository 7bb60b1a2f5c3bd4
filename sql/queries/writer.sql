-- Queries of beaconsql.writer: the reference way to record a run, into jobs,
-- cross_region_executions and region_results only (SPEC "The writer"); the mirror triggers
-- derive executions. Parameters are psycopg named placeholders; no literal percent signs here.
-- They run in the caller's session, under its search_path: every function, operator and type
-- they name is schema-qualified, so that none planted ahead of pg_catalog is the one used.

-- name: create_job
-- Insert a jobs row as the runner's JobsRepo.CreateJob does (runner-app.md section 2.1).
INSERT INTO public.jobs (jobspec_id, jobspec_data, status, created_at, updated_at)
VALUES (%(jobspec_id)s, %(jobspec_data)s, %(status)s,
        (%(created_at)s::pg_catalog.timestamptz AT TIME ZONE 'UTC'),
        (pg_catalog.now() AT TIME ZONE 'UTC'))
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
-- region serialise on the row and each re-reads the latest version, so none is lost. An element
-- the writer stamped as finished now (finished_now) finishes no earlier than its own or its
-- region's start.
UPDATE public.region_results r
SET execution_output = (
    SELECT pg_catalog.jsonb_set(
        CASE WHEN pg_catalog.jsonb_typeof(r.execution_output) OPERATOR(pg_catalog.=) 'object'
             THEN r.execution_output ELSE '{}'::pg_catalog.jsonb END,
        '{executions}',
        CASE
            WHEN EXISTS (SELECT 1
                         FROM pg_catalog.jsonb_array_elements(
                                  r.execution_output OPERATOR(pg_catalog.->) 'executions') el
                         WHERE pg_catalog.jsonb_typeof(r.execution_output OPERATOR(pg_catalog.->) 'executions')
                                   OPERATOR(pg_catalog.=) 'array'
                           AND el OPERATOR(pg_catalog.->>) 'model_id' OPERATOR(pg_catalog.=) %(model_id)s
                           AND el OPERATOR(pg_catalog.->>) 'question_id' OPERATOR(pg_catalog.=) %(question_id)s)
            THEN (SELECT pg_catalog.jsonb_agg(
                             CASE WHEN el OPERATOR(pg_catalog.->>) 'model_id' OPERATOR(pg_catalog.=) %(model_id)s
                                   AND el OPERATOR(pg_catalog.->>) 'question_id' OPERATOR(pg_catalog.=) %(question_id)s
                                  THEN pair.element ELSE el END
                             ORDER BY ord)
                  FROM pg_catalog.jsonb_array_elements(r.execution_output OPERATOR(pg_catalog.->) 'executions')
                       WITH ORDINALITY AS t(el, ord))
            WHEN pg_catalog.jsonb_typeof(r.execution_output OPERATOR(pg_catalog.->) 'executions')
                     OPERATOR(pg_catalog.=) 'array'
            THEN (r.execution_output OPERATOR(pg_catalog.->) 'executions')
                     OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pair.element)
            ELSE pg_catalog.jsonb_build_array(pair.element)
        END)
    FROM (SELECT CASE WHEN NOT %(finished_now)s THEN given.element
                      -- (an infinite start leaves the time as stamped)
                      ELSE coalesce(pg_catalog.jsonb_set(given.element, '{completed_at}', pg_catalog.to_jsonb(
                               pg_catalog.to_char(
                                   greatest((given.element OPERATOR(pg_catalog.->>) 'completed_at')::pg_catalog.timestamptz,
                                            (given.element OPERATOR(pg_catalog.->>) 'started_at')::pg_catalog.timestamptz,
                                            r.started_at) AT TIME ZONE 'UTC',
                                   'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))),
                                    given.element)
                 END AS element
          FROM (SELECT %(element)s::pg_catalog.jsonb AS element) given) pair)
WHERE r.id OPERATOR(pg_catalog.=) %(region_result_id)s::pg_catalog.uuid
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
           (SELECT pg_catalog.count(*) FROM (
                SELECT m.model_id, q.question_id
                FROM public.jobs_mirror_models(j.jobspec_data, r.model_id::pg_catalog.text) m,
                     public.jobs_mirror_questions(j.jobspec_data) q
                WHERE m.model_id IS NOT NULL AND q.question_id IS NOT NULL
                UNION
                SELECT e.model_id, e.question_id
                FROM public.region_results_mirror_elements(
                         r.execution_output OPERATOR(pg_catalog.->) 'executions') e
                WHERE e.wins) pairs) AS total,
           (SELECT pg_catalog.count(*)
            FROM public.region_results_mirror_elements(
                     r.execution_output OPERATOR(pg_catalog.->) 'executions') e
            WHERE e.wins
              AND pg_catalog.lower(e.element OPERATOR(pg_catalog.->>) 'status')
                  OPERATOR(pg_catalog.=) 'completed') AS succeeded,
           (SELECT e.element OPERATOR(pg_catalog.->) 'output'
            FROM public.region_results_mirror_elements(
                     r.execution_output OPERATOR(pg_catalog.->) 'executions') e
            WHERE e.wins
              AND pg_catalog.lower(e.element OPERATOR(pg_catalog.->>) 'status')
                  OPERATOR(pg_catalog.=) 'completed'
            ORDER BY e.ordinality LIMIT 1) AS first_output
    FROM public.region_results r
    JOIN public.cross_region_executions x
      ON x.id OPERATOR(pg_catalog.=) r.cross_region_execution_id
    LEFT JOIN public.jobs j ON j.jobspec_id OPERATOR(pg_catalog.=) x.jobspec_id
    WHERE r.id OPERATOR(pg_catalog.=) %(region_result_id)s::pg_catalog.uuid
    FOR NO KEY UPDATE OF r)
UPDATE public.region_results r
SET status = coalesce(%(status)s::pg_catalog.text,
                      CASE WHEN c.succeeded OPERATOR(pg_catalog.>) 0 THEN 'success' ELSE 'failed' END),
    completed_at = %(completed_at)s::pg_catalog.timestamptz,
    duration_ms = (extract(epoch FROM %(completed_at)s::pg_catalog.timestamptz
                                      OPERATOR(pg_catalog.-) r.started_at)
                   OPERATOR(pg_catalog.*) 1000)::bigint,
    error_message = coalesce(%(error_message)s::pg_catalog.text,
                             CASE WHEN c.succeeded OPERATOR(pg_catalog.>) 0 THEN ''
                                  ELSE 'all executions failed' END),
    metadata = coalesce(r.metadata, '{}'::pg_catalog.jsonb) OPERATOR(pg_catalog.||)
               pg_catalog.jsonb_build_object(
                   'success_count', c.succeeded,
                   'failure_count', greatest(c.total OPERATOR(pg_catalog.-) c.succeeded, 0),
                   'total_executions', c.total),
    execution_output = CASE
        WHEN c.first_output IS NULL THEN r.execution_output
        ELSE pg_catalog.jsonb_set(coalesce(r.execution_output, '{}'::pg_catalog.jsonb), '{data}',
                                  c.first_output)
                 OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('hash', '') END
FROM current c
WHERE r.id OPERATOR(pg_catalog.=) c.id
RETURNING r.status, c.succeeded, greatest(c.total OPERATOR(pg_catalog.-) c.succeeded, 0), c.total;

-- name: finish_run
-- Close a run as the runner does after all regions (runner-app.md section 2.4): completed when
-- successful regions >= min_regions_required and their rate >= min_success_rate, partial when
-- only the first holds, else failed.
UPDATE public.cross_region_executions x
SET success_count = s.succeeded,
    failure_count = s.regions OPERATOR(pg_catalog.-) s.succeeded,
    status = CASE
        WHEN s.succeeded OPERATOR(pg_catalog.>=) x.min_regions_required
             AND s.succeeded::numeric OPERATOR(pg_catalog./) greatest(x.total_regions, 1)
                 OPERATOR(pg_catalog.>=) x.min_success_rate THEN 'completed'
        WHEN s.succeeded OPERATOR(pg_catalog.>=) x.min_regions_required THEN 'partial'
        ELSE 'failed' END,
    completed_at = %(completed_at)s::pg_catalog.timestamptz,
    duration_ms = (extract(epoch FROM %(completed_at)s::pg_catalog.timestamptz
                                      OPERATOR(pg_catalog.-) x.started_at)
                   OPERATOR(pg_catalog.*) 1000)::bigint
FROM (SELECT pg_catalog.count(*) FILTER (WHERE r.status OPERATOR(pg_catalog.=) 'success') AS succeeded,
             greatest(pg_catalog.count(*), pg_catalog.max(x2.total_regions)) AS regions
      FROM public.cross_region_executions x2
      LEFT JOIN public.region_results r ON r.cross_region_execution_id OPERATOR(pg_catalog.=) x2.id
      WHERE x2.id OPERATOR(pg_catalog.=) %(run_id)s::pg_catalog.uuid) s
WHERE x.id OPERATOR(pg_catalog.=) %(run_id)s::pg_catalog.uuid
RETURNING x.status, x.jobspec_id, x.success_count, x.failure_count;

-- name: set_job_status
-- The jobs row follows its run: partial is stored as running, since chk_jobs_status has no
-- partial (runner-app.md sections 2.4, 9).
UPDATE public.jobs
SET status = CASE WHEN %(run_status)s::pg_catalog.text OPERATOR(pg_catalog.=) 'completed' THEN 'completed'
                  WHEN %(run_status)s::pg_catalog.text OPERATOR(pg_catalog.=) 'failed' THEN 'failed'
                  ELSE 'running' END,
    updated_at = pg_catalog.now() AT TIME ZONE 'UTC'
WHERE jobspec_id OPERATOR(pg_catalog.=) %(jobspec_id)s;
