-- executions_unified: one row per logical execution (job, region, model, question) per
-- jobspec_id, whoever wrote it and whether or not it has been mirrored yet (SPEC "The view").
-- Read by the portal queries (sql/queries/portal.sql) and `beaconsql executions/progress`.
--
-- Candidates: (a) every direct executions row; (b) the mirrored rows of each region result
-- that is mirrored; (c) the rule's rows, computed here, for each region result that is not;
-- (d) the placeholders (evidence 1) of each mirrored region result still unfinished. Among the
-- candidates of one key: a direct row first; then evidence 3 over 2 over 1 (a stored row over a
-- placeholder); then a finished status; then the newest. Times a client cannot read are null.
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
       CASE WHEN public.executions_mirror_readable(c.started_at)
            THEN c.started_at AT TIME ZONE 'UTC' END AS started_at,
       CASE WHEN public.executions_mirror_readable(c.completed_at)
            THEN c.completed_at AT TIME ZONE 'UTC' END AS completed_at,
       CASE WHEN public.executions_mirror_readable(c.created_at)
            THEN c.created_at AT TIME ZONE 'UTC' END AS created_at,
       CASE WHEN public.executions_mirror_readable(c.started_at)
                 AND public.executions_mirror_readable(c.completed_at)
            THEN (extract(epoch FROM c.completed_at - c.started_at) * 1000)::bigint END AS duration_ms,
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
       CASE WHEN public.executions_mirror_readable(c.last_retry_at AT TIME ZONE 'UTC')
            THEN c.last_retry_at END AS last_retry_at,
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
               e.status::text, e.mirror_evidence::smallint AS evidence, false AS placeholder,
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
               e.status::text, e.mirror_evidence::smallint, false,
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
        -- (c) the rule's rows of region results that are not mirrored, and (d) the placeholders
        -- of mirrored region results still unfinished
        SELECT NULL::integer, 'derived'::text, 1,
               i.region_result_id::uuid, (f.mirror_row).cross_region_execution_id::uuid,
               (f.mirror_row).job_id::integer, i.jobspec_id::text, (f.mirror_row).region::text,
               (f.mirror_row).provider_id::text, (f.mirror_row).model_id::text,
               (f.mirror_row).question_id::text, (f.mirror_row).question_id::text,
               CASE WHEN (f.mirror_row).job_id IS NULL THEN i.region_result_id::text END,
               (f.mirror_row).status::text, (f.mirror_row).mirror_evidence::smallint, NOT f.stored,
               (f.mirror_row).started_at::timestamp, (f.mirror_row).completed_at::timestamp,
               (f.mirror_row).created_at::timestamp, (f.mirror_row).output_data::jsonb,
               (f.mirror_row).receipt_data::jsonb, (f.mirror_row).original_error::text,
               -- what a mirrored row would hold: executions' column defaults
               NULL::text, 'unknown'::text, false, false, false, 0, 0, 3,
               NULL::timestamptz, '[]'::jsonb
        FROM public.region_results_mirror_inputs i
        CROSS JOIN LATERAL public.region_results_mirror_rows(
            i.region_result, i.job_id, i.jobspec_data, i.job_status) f
        WHERE f.anomaly_kind IS NULL  -- the pair rows, not the anomalies
          AND (NOT i.mirrored OR (NOT i.state_finished AND NOT f.stored))
    ) u
    ORDER BY u.jobspec_id, u.job_id, u.region, u.model_id, u.question_key, u.alone,
             u.source_rank,
             -- evidence ranks mirrored and rule rows only, never a direct (or detached) row
             CASE WHEN u.source_rank > 0 THEN u.evidence END DESC NULLS LAST,
             u.placeholder,
             coalesce(u.status IN ('completed', 'failed', 'cancelled'), false) DESC,
             u.completed_at DESC NULLS LAST,
             u.created_at DESC NULLS LAST,
             -- region_result_id before execution_id: a mirrored row and the row the view derives
             -- for the same region result then rank alike, so a backfill changes nothing shown;
             -- direct rows have none, and fall to execution_id
             u.region_result_id DESC NULLS LAST,
             u.execution_id DESC NULLS LAST
) c;
