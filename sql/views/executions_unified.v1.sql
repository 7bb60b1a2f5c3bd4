-- executions_unified: one row per logical execution (job, region, model, question) per
-- jobspec_id, whoever wrote it and whether or not it has been mirrored yet (SPEC "The view").
-- Read by the portal queries (sql/queries/portal.sql) and `beaconsql executions/progress`.
--
-- Candidates: (a) every direct executions row; (b) the mirrored rows of each region result
-- that is mirrored (its state matches its current version and its job's); (c) the rows the
-- mirror rule yields, computed here, for each region result that is not (new, changed or
-- deleted while triggers were skipped). So the view is right before any backfill, and a
-- backfill never changes what it shows. Among candidates of one key the one shown is: a direct
-- row first; then evidence 3 over 2 over 1; then a finished status; then the newest
-- (completed_at, created_at, then region_result_id, execution_id; descending, NULLs last).
-- Rows with a NULL job_id have no key: each stands alone. All times are timestamptz (the
-- naive executions columns hold UTC). A filter on jobspec_id reaches every branch's indexes.
CREATE OR REPLACE VIEW public.executions_unified AS
SELECT c.execution_id,
       c.source,
       c.region_result_id,
       c.cross_region_execution_id,
       c.job_id,
       c.jobspec_id,
       c.region,
       c.provider_id,
       c.model_id,
       c.question_id,
       c.status,
       c.evidence,
       c.started_at AT TIME ZONE 'UTC' AS started_at,
       c.completed_at AT TIME ZONE 'UTC' AS completed_at,
       c.created_at AT TIME ZONE 'UTC' AS created_at,
       (extract(epoch FROM c.completed_at - c.started_at) * 1000)::bigint AS duration_ms,
       c.output_data,
       c.receipt_data,
       c.original_error,
       c.system_prompt,
       c.response_classification,
       c.is_substantive,
       c.is_content_refusal,
       c.is_technical_error,
       c.response_length,
       c.retry_count,
       c.max_retries,
       c.last_retry_at,
       c.retry_history
FROM (
    SELECT DISTINCT ON (u.jobspec_id, u.job_id, u.region, u.model_id, u.question_key, u.alone)
           u.*
    FROM (
        -- (a) direct rows
        SELECT e.id::integer AS execution_id, 'direct'::text AS source, 0 AS source_rank,
               NULL::uuid AS region_result_id, e.cross_region_execution_id::uuid,
               e.job_id::integer, e.jobspec_id::text, e.region::text, e.provider_id::text,
               e.model_id::text, e.question_id::text, nullif(e.question_id, '')::text AS question_key,
               CASE WHEN e.job_id IS NULL THEN e.id::text END AS alone,
               e.status::text, e.mirror_evidence::smallint AS evidence,
               e.started_at::timestamp, e.completed_at::timestamp, e.created_at::timestamp,
               e.output_data::jsonb, e.receipt_data::jsonb, e.original_error::text,
               e.system_prompt::text, e.response_classification::text, e.is_substantive::boolean,
               e.is_content_refusal::boolean, e.is_technical_error::boolean,
               e.response_length::integer, e.retry_count::integer, e.max_retries::integer,
               e.last_retry_at::timestamptz, e.retry_history::jsonb
        FROM (SELECT d.*, j.jobspec_id
              FROM public.executions d
              LEFT JOIN public.jobs j ON j.id = d.job_id
              WHERE d.mirror_region_result_id IS NULL
              UNION ALL
              -- a mirrored row whose region result was deleted while triggers were skipped and
              -- which the transparency log references: the mirror keeps it, as a direct row
              SELECT d.*, j.jobspec_id
              FROM public.executions d
              LEFT JOIN public.jobs j ON j.id = d.job_id
              WHERE d.mirror_region_result_id IS NOT NULL
                AND EXISTS (SELECT 1 FROM public.transparency_log t WHERE t.execution_id = d.id)
                AND NOT EXISTS (SELECT 1 FROM public.region_results r
                                WHERE r.id = d.mirror_region_result_id)) e
        UNION ALL
        -- (b) mirrored rows of region results that are mirrored
        SELECT e.id::integer, 'mirrored'::text, 1,
               e.mirror_region_result_id::uuid, e.cross_region_execution_id::uuid,
               e.job_id::integer, i.jobspec_id::text, e.region::text, e.provider_id::text,
               e.model_id::text, e.question_id::text, nullif(e.question_id, '')::text,
               CASE WHEN e.job_id IS NULL THEN e.id::text END,
               e.status::text, e.mirror_evidence::smallint,
               e.started_at::timestamp, e.completed_at::timestamp, e.created_at::timestamp,
               e.output_data::jsonb, e.receipt_data::jsonb, e.original_error::text,
               e.system_prompt::text, e.response_classification::text, e.is_substantive::boolean,
               e.is_content_refusal::boolean, e.is_technical_error::boolean,
               e.response_length::integer, e.retry_count::integer, e.max_retries::integer,
               e.last_retry_at::timestamptz, e.retry_history::jsonb
        FROM public.region_results_mirror_inputs i
        JOIN public.executions e ON e.mirror_region_result_id = i.region_result_id
        WHERE i.mirrored
        UNION ALL
        -- (c) the rule's rows for region results that are not mirrored
        SELECT NULL::integer, 'derived'::text, 1,
               i.region_result_id::uuid, f.cross_region_execution_id::uuid,
               f.job_id::integer, i.jobspec_id::text, f.region::text, f.provider_id::text,
               f.model_id::text, f.question_id::text, f.question_id::text,
               CASE WHEN f.job_id IS NULL THEN i.region_result_id::text END,
               f.status::text, f.evidence::smallint,
               f.started_at::timestamp, f.completed_at::timestamp, f.created_at::timestamp,
               f.output_data::jsonb, f.receipt_data::jsonb, f.original_error::text,
               -- what a mirrored row would hold: executions' column defaults
               NULL::text, 'unknown'::text, false, false, false, 0, 0, 3,
               NULL::timestamptz, '[]'::jsonb
        FROM public.region_results_mirror_inputs i
        CROSS JOIN LATERAL public.region_results_mirror_rows(i.region_result, i.job_id, i.jobspec_data) f
        WHERE NOT i.mirrored AND f.evidence IS NOT NULL
    ) u
    ORDER BY u.jobspec_id, u.job_id, u.region, u.model_id, u.question_key, u.alone,
             u.source_rank,
             u.evidence DESC NULLS LAST,
             coalesce(u.status IN ('completed', 'failed', 'cancelled'), false) DESC,
             u.completed_at DESC NULLS LAST,
             u.created_at DESC NULLS LAST,
             -- region_result_id before execution_id: a mirrored row and the row the view derives
             -- for the same region result then rank alike, so a backfill changes nothing shown;
             -- direct rows have none, and fall to execution_id
             u.region_result_id DESC NULLS LAST,
             u.execution_id DESC NULLS LAST
) c;
