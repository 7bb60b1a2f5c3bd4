-- Benchmark data, built set-based (generate_series) in the scratch database. Read by
-- bench/scenarios.py; each query names its parameters. Jobs follow the portal spec shape
-- (runner-app.md section 4): 2 regions x 3 models x 3 questions unless a query says otherwise.
-- Parameters are psycopg named placeholders; no literal percent signs here.

-- name: jobs
-- Jobs prefix-1 .. prefix-n with the worked example's spec.
INSERT INTO jobs (jobspec_id, jobspec_data, status, created_at, updated_at)
SELECT %(prefix)s || g,
       jsonb_build_object(
           'id', %(prefix)s || g,
           'constraints', jsonb_build_object('regions', jsonb_build_array('US', 'EU')),
           'metadata', jsonb_build_object('models', jsonb_build_array('llama3.2-1b', 'mistral-7b', 'qwen2.5-1.5b')),
           'questions', jsonb_build_array('greatest_invention', 'tiananmen_neutral', 'taiwan_status')),
       'completed', timestamp '2025-10-01' + g * interval '1 minute',
       timestamp '2025-10-01' + g * interval '1 minute'
FROM generate_series(1, %(n)s) g;

-- name: runs
-- One completed run per job of the prefix.
INSERT INTO cross_region_executions (jobspec_id, total_regions, min_regions_required, status,
                                     started_at, completed_at, success_count)
SELECT j.jobspec_id, 2, 1, 'completed', j.created_at AT TIME ZONE 'UTC',
       j.created_at AT TIME ZONE 'UTC' + interval '2 minutes', 2
FROM jobs j WHERE j.jobspec_id LIKE %(prefix)s || '%%';

-- name: legacy_region_results
-- The runner's own region rows: one answer in data (llama3.2-1b / greatest_invention).
INSERT INTO region_results (cross_region_execution_id, region, provider_id, status, started_at,
                            completed_at, duration_ms, execution_output, error_message, metadata)
SELECT x.id, r.region, 'modal-' || lower(r.region), 'success', x.started_at + r.k * interval '1 minute',
       x.started_at + r.k * interval '1 minute' + interval '45 seconds', 45000,
       jsonb_build_object('data', jsonb_build_object(
           'response', 'answer of ' || x.jobspec_id || ' in ' || r.region,
           'metadata', jsonb_build_object('model', 'llama3.2-1b', 'region', r.region)), 'hash', ''),
       '', jsonb_build_object('success_count', 1, 'failure_count', 0, 'total_executions', 1)
FROM cross_region_executions x
CROSS JOIN (VALUES ('US', 0), ('EU', 1)) r(region, k)
WHERE x.jobspec_id LIKE %(prefix)s || '%%';

-- name: writer_region_results
-- Region rows in the writer's format: one element per pair, all completed.
INSERT INTO region_results (cross_region_execution_id, region, provider_id, status, started_at,
                            completed_at, duration_ms, execution_output, error_message, metadata)
SELECT x.id, r.region, 'modal-' || lower(r.region), 'success', x.started_at + r.k * interval '1 minute',
       x.started_at + r.k * interval '1 minute' + interval '45 seconds', 45000,
       jsonb_build_object('executions', (
           SELECT jsonb_agg(jsonb_build_object(
                      'model_id', m, 'question_id', q, 'status', 'completed',
                      'started_at', to_char(x.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                      'completed_at', to_char(x.started_at AT TIME ZONE 'UTC' + interval '3 seconds', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                      'output', jsonb_build_object('response', m || ' on ' || q || ' in ' || r.region),
                      'receipt', jsonb_build_object('id', 'receipt-' || x.id || '-' || m || '-' || q),
                      'error', NULL) ORDER BY m, q)
           FROM unnest(ARRAY['llama3.2-1b', 'mistral-7b', 'qwen2.5-1.5b']) m,
                unnest(ARRAY['greatest_invention', 'tiananmen_neutral', 'taiwan_status']) q)),
       '', jsonb_build_object('success_count', 9, 'failure_count', 0, 'total_executions', 9)
FROM cross_region_executions x
CROSS JOIN (VALUES ('US', 0), ('EU', 1)) r(region, k)
WHERE x.jobspec_id LIKE %(prefix)s || '%%';

-- name: running_region_results
-- Regions still running, in the writer's format: the first %(recorded)s of the 9 pairs
-- recorded, the rest not yet (the view derives their placeholders). The portal polls these.
INSERT INTO region_results (cross_region_execution_id, region, provider_id, status, started_at,
                            execution_output)
SELECT x.id, r.region, 'modal-' || lower(r.region), 'running', x.started_at,
       jsonb_build_object('executions', (
           SELECT jsonb_agg(jsonb_build_object(
                      'model_id', p.m, 'question_id', p.q, 'status', 'completed',
                      'started_at', to_char(x.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                      'completed_at', to_char(x.started_at AT TIME ZONE 'UTC' + interval '3 seconds', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                      'output', jsonb_build_object('response', p.m || ' on ' || p.q),
                      'error', NULL) ORDER BY p.m, p.q)
           FROM (SELECT m, q FROM unnest(ARRAY['llama3.2-1b', 'mistral-7b', 'qwen2.5-1.5b']) m,
                                  unnest(ARRAY['greatest_invention', 'tiananmen_neutral', 'taiwan_status']) q
                 ORDER BY m, q LIMIT %(recorded)s) p))
FROM cross_region_executions x
CROSS JOIN (VALUES ('US'), ('EU')) r(region)
WHERE x.jobspec_id LIKE %(prefix)s || '%%';

-- name: unmirror_region_results
-- Change %(n)s region results of the prefix behind the mirror's back (the caller disables its
-- triggers): they are not mirrored until a backfill, and the view derives their rows.
UPDATE region_results r
SET execution_output = jsonb_set(r.execution_output, '{executions,0,output,response}',
                                 '"changed while the mirror was off"')
WHERE r.id IN (SELECT r2.id FROM region_results r2
               JOIN cross_region_executions x ON x.id = r2.cross_region_execution_id
               WHERE x.jobspec_id LIKE %(prefix)s || '%%'
                 AND jsonb_typeof(r2.execution_output -> 'executions') = 'array'
               ORDER BY r2.id LIMIT %(n)s);

-- name: direct_executions
-- The runner's own executions rows (its dual write), one per pair of each region result.
INSERT INTO executions (job_id, provider_id, region, status, started_at, completed_at,
                        output_data, receipt_data, model_id, question_id, created_at)
SELECT j.id, r.provider_id, r.region, 'completed', r.started_at AT TIME ZONE 'UTC',
       r.started_at AT TIME ZONE 'UTC' + interval '3 seconds',
       jsonb_build_object('response', m || ' on ' || q || ' in ' || r.region),
       jsonb_build_object('id', 'receipt-' || r.id || '-' || m || '-' || q),
       m, q, r.started_at AT TIME ZONE 'UTC'
FROM region_results r
JOIN cross_region_executions x ON x.id = r.cross_region_execution_id
JOIN jobs j ON j.jobspec_id = x.jobspec_id
CROSS JOIN unnest(ARRAY['llama3.2-1b', 'mistral-7b', 'qwen2.5-1.5b']) m
CROSS JOIN unnest(ARRAY['greatest_invention', 'tiananmen_neutral', 'taiwan_status']) q
WHERE x.jobspec_id LIKE %(prefix)s || '%%';

-- name: insert_select_rule
-- The ceiling for the backfill: the rule's stored rows of every region result in one INSERT ...
-- SELECT, no batches, no locks, no state, no triggers (the caller disables them).
INSERT INTO executions (job_id, cross_region_execution_id, region, provider_id, model_id,
                        question_id, status, started_at, completed_at, created_at, output_data,
                        receipt_data, original_error, mirror_region_result_id, mirror_evidence)
SELECT (f.mirror_row).*
FROM region_results_mirror_inputs i
CROSS JOIN LATERAL region_results_mirror_rows(i.region_result, i.job_id, i.jobspec_data,
                                              i.job_status) f
WHERE f.stored;

-- name: view_read
-- The view's rows of one job, read from the view itself: what executions_unified_of_job plans
-- once per connection (its planning time is reported beside the portal read's).
SELECT * FROM executions_unified WHERE jobspec_id = %(jobspec_id)s;

-- name: direct_read
-- The runner's own read (runner-app.md section 3.1): executions joined to jobs, newest first.
SELECT e.id, j.jobspec_id, e.status, e.region, e.provider_id, e.started_at, e.completed_at,
       e.created_at, (e.receipt_data IS NOT NULL) AS has_receipt, e.output_data,
       COALESCE(e.model_id, 'llama3.2-1b'), COALESCE(e.question_id, ''),
       COALESCE(e.system_prompt, ''), COALESCE(e.response_classification, 'unknown'),
       COALESCE(e.is_substantive, false), COALESCE(e.is_content_refusal, false),
       COALESCE(e.response_length, 0), COALESCE(e.retry_count, 0), COALESCE(e.max_retries, 3),
       e.last_retry_at, COALESCE(e.retry_history, '[]'::jsonb), e.original_error
FROM executions e
JOIN jobs j ON e.job_id = j.id
WHERE j.jobspec_id = %(jobspec_id)s
ORDER BY e.created_at DESC;

-- name: direct_job_page
-- The runner's ?include=executions read (runner-app.md section 3.2), the portal's page of 100.
SELECT e.id, e.region, e.provider_id, e.status, e.started_at, e.completed_at, e.model_id,
       e.question_id, e.receipt_data, e.response_classification, e.is_substantive,
       e.is_content_refusal
FROM executions e
JOIN jobs j ON e.job_id = j.id
WHERE j.jobspec_id = %(jobspec_id)s
ORDER BY e.created_at DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: direct_cross_region
-- The runner's GetCrossRegionExecutions (section 3.3), by job and model.
SELECT e.id, e.job_id, e.region, e.status, e.provider_id, e.model_id, e.question_id,
       e.output_data, e.started_at, e.completed_at, e.created_at, e.response_length,
       e.response_classification, e.is_substantive, e.is_content_refusal,
       e.is_technical_error, j.jobspec_id
FROM executions e
JOIN jobs j ON e.job_id = j.id
WHERE j.jobspec_id = %(jobspec_id)s AND e.model_id = %(model_id)s
ORDER BY e.region ASC, e.created_at DESC;

-- name: direct_cross_region_diff
-- The runner's cross-region-diff read (section 3.3): a job's completed rows.
SELECT e.id, e.region, e.status, e.output_data, e.created_at
FROM executions e
JOIN jobs j ON e.job_id = j.id
WHERE j.jobspec_id = %(jobspec_id)s AND e.status = 'completed'
ORDER BY e.region, e.created_at DESC;

-- name: direct_execution
-- The runner's /executions/{id}/details read (section 3.3).
SELECT e.id, j.jobspec_id, e.status, e.region, e.provider_id, e.started_at, e.completed_at,
       e.created_at, e.output_data, e.receipt_data
FROM executions e
LEFT JOIN jobs j ON e.job_id = j.id
WHERE e.id = %(execution_id)s;

-- name: direct_list
-- The runner's GET /api/v1/executions page (section 3.3).
SELECT e.id, j.jobspec_id, e.status, e.region, e.provider_id, e.started_at, e.completed_at,
       e.created_at, e.receipt_data, e.output_data, COALESCE(e.model_id, 'llama3.2-1b')
FROM executions e
LEFT JOIN jobs j ON e.job_id = j.id
ORDER BY e.created_at DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: direct_count
-- The list's total, the runner's way.
SELECT count(*) FROM executions;

-- name: direct_diffs
-- The runner's GET /api/v1/diffs: jobs with two regions or more among completed executions.
SELECT j.jobspec_id, count(DISTINCT e.region)
FROM executions e
JOIN jobs j ON e.job_id = j.id
WHERE e.status = 'completed'
GROUP BY j.jobspec_id
HAVING count(DISTINCT e.region) >= 2
ORDER BY j.jobspec_id
LIMIT %(limit)s;

-- name: view_derived_rows
-- The share of the list spent on the rows the view derives: finding the region results not
-- mirrored (one pass over region_results) and deriving theirs.
SELECT count(*) FROM executions_unified u WHERE u.source = 'derived';
