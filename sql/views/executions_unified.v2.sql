-- executions_unified, version 2 (revision 0008): the same rows as version 1
-- (executions_unified.v1.sql, which defines the rest), read far faster for a job run many
-- times (docs/performance.md).
--
-- Version 1 probed every other candidate of a row's key, and every other region result of its
-- job and region, through a function each: for a job run n times, n squared calls, each of
-- which could run the rule (100 runs of a 9-pair job in one region: 171 s to read the job).
-- Version 2 asks those functions only where the answer can be yes (in a CASE, which PostgreSQL
-- evaluates in order):
-- - of a candidate whose rank, computed inline from its columns, is greater: as a direct row
--   when the row probing is direct (only a direct row outranks it); else as a mirrored row,
--   unless it may be direct (no region result, or one that is gone), which outranks any;
-- - of a region result the view derives rows from (executions_unified_derives).
-- Those are the probes of the stored rows (a) and (b). The probes of the derived rows (c), (d)
-- are as in version 1: there are few such rows (those of region results unfinished or not
-- mirrored), and asking before each call made PostgreSQL sort every executions row for a read
-- of the whole view.
-- And a region result is unfinished by its own status: the mirror state's `finished` is not
-- updated when a region result is started and finished in one transaction (its xmin does not
-- change), which made version 1 run the rule for it on every read.

-- executions_unified_derives(status, completed_at, mirrored): whether the view derives rows
-- of a region result of that status and completed_at: it is unfinished (its placeholders,
-- branch (d)), or not mirrored (branch (c)). Inlined. (It takes the two columns, not the
-- region result: a whole row would be built, its JSON read in full, for every one tested.)
CREATE OR REPLACE FUNCTION public.executions_unified_derives(
    status text, completed_at timestamptz, mirrored boolean)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT NOT public.executions_mirror_finished(
               public.region_results_mirror_region_status(status, completed_at))
           OR NOT mirrored
$$;

CREATE OR REPLACE VIEW public.executions_unified_derived AS
SELECT i.region_result_id,
       i.cross_region_execution_id,
       i.jobspec_id,
       i.job_id,
       i.region,
       f.mirror_row AS m,
       NOT f.stored AS placeholder,
       public.executions_unified_rank(
           false, (f.mirror_row).mirror_evidence, NOT f.stored, (f.mirror_row).status,
           (f.mirror_row).completed_at, (f.mirror_row).created_at, i.region_result_id, NULL::integer)
           AS rank
FROM public.region_results_mirror_inputs i
CROSS JOIN LATERAL (
    -- the rule runs for these region results only (OFFSET 0 keeps the test before the call)
    SELECT r.* FROM public.region_results_mirror_rows(
        i.region_result, i.job_id, i.jobspec_data, i.job_status) r
    WHERE public.executions_unified_derives(
              (i.region_result).status, (i.region_result).completed_at, i.mirrored)
    OFFSET 0) f
WHERE f.anomaly_kind IS NULL  -- the pair rows, not the anomalies
  AND (NOT i.mirrored OR NOT f.stored);

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
    -- (a) direct rows (one source per branch: a filter on source drops whole branches)
    SELECT s.id::integer AS execution_id, 'direct'::text AS source, NULL::uuid AS region_result_id,
           s.cross_region_execution_id::uuid, s.job_id::integer, s.jobspec_id::text,
           s.region::text, s.provider_id::text, s.model_id::text, s.question_id::text,
           s.status::text, s.mirror_evidence::smallint AS evidence,
           s.started_at::timestamp, s.completed_at::timestamp, s.created_at::timestamp,
           s.output_data::jsonb, s.receipt_data::jsonb, s.original_error::text,
           s.system_prompt::text, s.response_classification::text, s.is_substantive::boolean,
           s.is_content_refusal::boolean, s.is_technical_error::boolean,
           s.response_length::integer, s.retry_count::integer, s.max_retries::integer,
           s.last_retry_at::timestamptz, s.retry_history::jsonb
    FROM public.executions_unified_rows s
    -- its rank, as a direct row (s.rank, without the test of directness it carries)
    CROSS JOIN LATERAL (
        SELECT public.executions_unified_rank(
                   true, s.mirror_evidence, false, s.status, s.completed_at, s.created_at, NULL,
                   s.id) AS rank
    ) k
    WHERE s.direct
      -- no better row of its key (a row without a job has none: it is alone in its key);
      -- the key's index answers, or, for the legacy rows without a model or question id
      -- ('' and NULL question ids alike), its job and region
      AND NOT EXISTS (
          SELECT 1 FROM public.executions e2
          WHERE e2.job_id = s.job_id AND e2.region = s.region
            AND e2.model_id = s.model_id AND e2.question_id = s.question_id
            AND e2.id <> s.id
            AND CASE WHEN public.executions_unified_rank(
                              true, e2.mirror_evidence, false, e2.status, e2.completed_at,
                              e2.created_at, NULL, e2.id) > k.rank
                     THEN public.executions_unified_outranks(e2.id, k.rank) END)
      AND (s.job_id IS NULL OR (s.model_id IS NOT NULL AND nullif(s.question_id, '') IS NOT NULL)
           OR NOT EXISTS (
               SELECT 1 FROM public.executions e2
               WHERE e2.job_id = s.job_id AND e2.region = s.region
                 AND e2.model_id IS NOT DISTINCT FROM s.model_id
                 AND nullif(e2.question_id, '') IS NOT DISTINCT FROM nullif(s.question_id, '')
                 AND e2.id <> s.id
                 AND CASE WHEN public.executions_unified_rank(
                                   true, e2.mirror_evidence, false, e2.status, e2.completed_at,
                                   e2.created_at, NULL, e2.id) > k.rank
                          THEN public.executions_unified_outranks(e2.id, k.rank) END))
    UNION ALL
    -- (b) mirrored rows of region results that are mirrored, when no row of their key
    -- outranks them: a direct one, a better mirrored one, or a better one the view derives
    -- from another region result of the job
    SELECT e.id::integer, 'mirrored'::text, e.mirror_region_result_id::uuid,
           e.cross_region_execution_id::uuid, e.job_id::integer, i.jobspec_id::text,
           e.region::text, e.provider_id::text, e.model_id::text, e.question_id::text,
           e.status::text, e.mirror_evidence::smallint,
           e.started_at::timestamp, e.completed_at::timestamp, e.created_at::timestamp,
           e.output_data::jsonb, e.receipt_data::jsonb, e.original_error::text,
           e.system_prompt::text, e.response_classification::text, e.is_substantive::boolean,
           e.is_content_refusal::boolean, e.is_technical_error::boolean,
           e.response_length::integer, e.retry_count::integer, e.max_retries::integer,
           e.last_retry_at::timestamptz, e.retry_history::jsonb
    FROM public.region_results_mirror_inputs i
    JOIN public.executions e ON e.mirror_region_result_id = i.region_result_id
    CROSS JOIN LATERAL (
        SELECT public.executions_unified_rank(
                   false, e.mirror_evidence, false, e.status, e.completed_at, e.created_at,
                   e.mirror_region_result_id, e.id) AS rank
    ) k
    WHERE i.mirrored
      -- (a row without a job is alone in its key)
      AND NOT EXISTS (
          SELECT 1 FROM public.executions e2
          WHERE e2.job_id = e.job_id AND e2.region = e.region
            AND e2.model_id = e.model_id AND e2.question_id = e.question_id
            AND e2.id <> e.id
            AND CASE WHEN e2.mirror_region_result_id IS NULL
                          OR public.executions_unified_rank(
                                 false, e2.mirror_evidence, false, e2.status, e2.completed_at,
                                 e2.created_at, e2.mirror_region_result_id, e2.id) > k.rank
                          OR NOT EXISTS (SELECT 1 FROM public.region_results r3
                                         WHERE r3.id = e2.mirror_region_result_id)
                     THEN public.executions_unified_outranks(e2.id, k.rank) END)
      AND NOT EXISTS (
          SELECT 1 FROM public.region_results_mirror_inputs i2
          WHERE e.job_id IS NOT NULL
            AND i2.jobspec_id = i.jobspec_id AND i2.region = e.region
            AND i2.region_result_id <> e.mirror_region_result_id
            AND CASE WHEN public.executions_unified_derives(
                              (i2.region_result).status, (i2.region_result).completed_at,
                              i2.mirrored)
                     THEN public.executions_unified_derived_outranks(
                              i2.region_result_id, e.model_id, e.question_id, k.rank) END)
    UNION ALL
    -- (c), (d): the rows the view derives, when no stored or derived row of the key outranks them
    SELECT NULL::integer, 'derived'::text, d.region_result_id::uuid,
           d.cross_region_execution_id::uuid, d.job_id::integer, d.jobspec_id::text,
           d.region::text, (d.m).provider_id::text, (d.m).model_id::text,
           (d.m).question_id::text, (d.m).status::text, (d.m).mirror_evidence::smallint,
           (d.m).started_at::timestamp, (d.m).completed_at::timestamp,
           (d.m).created_at::timestamp, (d.m).output_data::jsonb, (d.m).receipt_data::jsonb,
           (d.m).original_error::text,
           -- what a mirrored row would hold: executions' column defaults
           NULL::text, 'unknown'::text, false, false, false, 0, 0, 3, NULL::timestamptz,
           '[]'::jsonb
    FROM public.executions_unified_derived d
    WHERE NOT EXISTS (
              SELECT 1 FROM public.executions e2
              WHERE e2.job_id = d.job_id AND e2.region = d.region
                AND e2.model_id = (d.m).model_id AND e2.question_id = (d.m).question_id
                AND public.executions_unified_outranks(e2.id, d.rank))
      AND NOT EXISTS (
              SELECT 1 FROM public.cross_region_executions x2
              JOIN public.region_results r2 ON r2.cross_region_execution_id = x2.id
              WHERE d.job_id IS NOT NULL
                AND x2.jobspec_id = d.jobspec_id AND r2.region = d.region
                AND r2.id <> d.region_result_id
                AND public.executions_unified_derived_outranks(
                        r2.id, (d.m).model_id, (d.m).question_id, d.rank))
) c;
