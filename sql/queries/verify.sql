-- Queries of `beaconsql verify` (beaconsql/verify.py): compare what is materialised in
-- executions with what the mirror rule yields, through region_results_mirror_plan (the
-- apply's own diff), read-only. Parameters are psycopg named placeholders.

-- name: region_results_batch
-- A keyset batch of region results in scope, with whether each is mirrored.
SELECT i.region_result_id, i.jobspec_id, i.mirrored, i.has_state
FROM public.region_results_mirror_inputs i
WHERE i.region_result_id > %(cursor)s
  AND (%(job)s::text IS NULL OR i.jobspec_id = %(job)s)
ORDER BY i.region_result_id
LIMIT %(batch_size)s;

-- name: differences
-- What applying the rule to these region results would change in executions: each change's
-- finding (missing, stale, orphaned, beside_direct) is a kind of drift.
SELECT p.finding::text, p.action::text, p.region_result_id, p.execution_id,
       (p.mirror_row).model_id, (p.mirror_row).question_id
FROM public.region_results_mirror_plan(%(ids)s::uuid[]) p
WHERE p.action IN ('insert', 'update', 'delete', 'detach');

-- name: deleted_unmirrored
-- Region results deleted while triggers were skipped: mirrored rows or a state left behind.
-- With a job, only the rows of that job (through their job or run); a state alone no longer
-- says which job it was.
SELECT o.id, count(e.id) AS rows_left
FROM (SELECT e.mirror_region_result_id AS id FROM public.executions e
      LEFT JOIN public.jobs j ON j.id = e.job_id
      LEFT JOIN public.cross_region_executions x ON x.id = e.cross_region_execution_id
      WHERE e.mirror_region_result_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM public.region_results r WHERE r.id = e.mirror_region_result_id)
        AND (%(job)s::text IS NULL OR j.jobspec_id = %(job)s OR x.jobspec_id = %(job)s)
      UNION
      SELECT s.region_result_id FROM public.region_results_mirror_state s
      WHERE %(job)s::text IS NULL
        AND NOT EXISTS (SELECT 1 FROM public.region_results r WHERE r.id = s.region_result_id)) o
LEFT JOIN public.executions e ON e.mirror_region_result_id = o.id
GROUP BY o.id
ORDER BY o.id;

-- name: anomalies
-- Anomalies the mirror recorded (reported, not drift), newest first.
SELECT a.kind, a.region_result_id, i.jobspec_id, a.detail, a.first_seen
FROM public.region_results_mirror_anomalies a
LEFT JOIN public.region_results_mirror_inputs i ON i.region_result_id = a.region_result_id
WHERE %(job)s::text IS NULL OR i.jobspec_id = %(job)s
ORDER BY a.first_seen DESC, a.region_result_id, a.kind, a.detail;

-- name: duplicates
-- Keys with more than one direct row: the runner's duplicate bug, hidden by the view.
SELECT j.jobspec_id, e.region, e.model_id, nullif(e.question_id, '') AS question_id,
       count(*) AS rows, array_agg(e.id ORDER BY e.id) AS execution_ids
FROM public.executions e
JOIN public.jobs j ON j.id = e.job_id
WHERE e.mirror_region_result_id IS NULL
  AND (%(job)s::text IS NULL OR j.jobspec_id = %(job)s)
GROUP BY j.jobspec_id, e.job_id, e.region, e.model_id, nullif(e.question_id, '')
HAVING count(*) > 1
ORDER BY j.jobspec_id, e.region, e.model_id, 4;

-- name: detached
-- Rows the mirror once wrote that are now direct rows (the runner changed them).
SELECT e.id, j.jobspec_id, e.region, e.model_id, e.question_id, e.status
FROM public.executions e
LEFT JOIN public.jobs j ON j.id = e.job_id
WHERE e.mirror_region_result_id IS NULL AND e.mirror_evidence IS NOT NULL
  AND (%(job)s::text IS NULL OR j.jobspec_id = %(job)s)
ORDER BY e.id;

-- name: record_run
-- Keep a verify run's counts by kind, for `beaconsql serve`'s /metrics (serve_metrics()).
INSERT INTO public.region_results_verify_runs (scope_job, examined, counts, exit_code)
VALUES (%(job)s, %(examined)s, %(counts)s, %(exit_code)s);
