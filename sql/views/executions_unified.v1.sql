-- executions_unified: one row per logical execution (job, region, model, question) per
-- jobspec_id, whoever wrote it and whether or not it has been mirrored yet (SPEC "The view").
-- Read by the portal queries (sql/queries/portal.sql) and `beaconsql executions/progress`.
--
-- Candidates of a key: (a) direct rows; (b) the mirrored rows of region results that are
-- mirrored; (c) the rule's rows of region results that are not; (d) the placeholders
-- (evidence 1) of mirrored region results still unfinished. The one shown is the candidate no
-- other candidate of its key outranks (executions_unified_rank): each branch keeps a row when
-- NOT EXISTS a better one, probing the key's index, so that a read scoped to a job, a run or
-- an execution id, or the newest rows first, reaches only its own rows (docs/performance.md).
--
-- executions_unified_rank(...): a candidate's rank; of two candidates of one key, the greater
-- is shown: a direct row over any other; then evidence 3 over 2 over 1 (among mirrored and
-- rule rows only: a direct row, detached or not, carries none); a stored row over a
-- placeholder; a finished status; then the newest: completed_at, created_at (NULLs last),
-- then region_result_id, then execution_id. No two candidates of a key rank alike.
DO $types$
BEGIN
    IF pg_catalog.to_regtype('public.executions_unified_rank') IS NULL THEN
        CREATE TYPE public.executions_unified_rank AS (
            direct boolean,
            evidence smallint,
            stored boolean,
            finished boolean,
            has_completed_at boolean,
            completed_at timestamp,
            has_created_at boolean,
            created_at timestamp,
            has_region_result boolean,
            region_result_id uuid,
            has_execution_id boolean,
            execution_id integer);
    END IF;
END
$types$;

CREATE OR REPLACE FUNCTION public.executions_unified_rank(
    direct boolean, evidence smallint, placeholder boolean, status text,
    completed_at timestamp, created_at timestamp, region_result_id uuid, execution_id integer)
RETURNS public.executions_unified_rank
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ROW(direct,
               CASE WHEN direct THEN 0 ELSE COALESCE(evidence, 0) END,
               NOT placeholder,
               COALESCE(status OPERATOR(pg_catalog.=) ANY ('{completed,failed,cancelled}'), false),
               completed_at IS NOT NULL, COALESCE(completed_at, '-infinity'),
               created_at IS NOT NULL, COALESCE(created_at, '-infinity'),
               region_result_id IS NOT NULL,
               COALESCE(region_result_id, '00000000-0000-0000-0000-000000000000'),
               execution_id IS NOT NULL, COALESCE(execution_id, 0)
           )::public.executions_unified_rank
$$;

-- executions_unified_rows: every executions row, with its job's jobspec_id and what the view
-- needs to rank it. direct: a direct row, or a mirrored row whose region result was deleted
-- while triggers were skipped and which the transparency log references (the mirror keeps
-- it, as a direct row).
CREATE OR REPLACE VIEW public.executions_unified_rows AS
SELECT e.*,
       j.jobspec_id,
       k.direct,
       public.executions_unified_rank(
           k.direct, e.mirror_evidence, false, e.status, e.completed_at, e.created_at,
           CASE WHEN NOT k.direct THEN e.mirror_region_result_id END, e.id) AS rank
FROM public.executions e
LEFT JOIN public.jobs j ON j.id = e.job_id
CROSS JOIN LATERAL (
    SELECT e.mirror_region_result_id IS NULL
           OR (NOT EXISTS (SELECT 1 FROM public.region_results r
                           WHERE r.id = e.mirror_region_result_id)
               AND EXISTS (SELECT 1 FROM public.transparency_log t WHERE t.execution_id = e.id))
           AS direct
) k;

-- executions_unified_derived: the rows the view computes: (c) every rule row of a region result
-- that is not mirrored, (d) the placeholders of a mirrored one still unfinished.
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
    WHERE NOT i.mirrored OR NOT i.state_finished
    OFFSET 0) f
WHERE f.anomaly_kind IS NULL  -- the pair rows, not the anomalies
  AND (NOT i.mirrored OR NOT f.stored);

-- executions_unified_outranks(execution_id, rank): whether that executions row is a candidate
-- that outranks a candidate of rank `rank` of its key. executions_unified_derived_outranks(
-- region_result_id, model_id, question_id, rank): whether that region result yields a row the
-- view derives for the pair that does. The view probes the key's index first and asks these only
-- of the rows it finds there (rarely any but the candidate itself): owner's rights, since
-- whoever reads the view reads through it, not the tables.
CREATE OR REPLACE FUNCTION public.executions_unified_outranks(
    execution_id integer, rank public.executions_unified_rank)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- a candidate: direct, or mirrored from a region result that is mirrored (which implies
    -- that its run is the job's: the state's job fingerprint holds the job's id)
    RETURN EXISTS (SELECT 1 FROM public.executions_unified_rows s
                   LEFT JOIN public.region_results_mirror_inputs i
                          ON i.region_result_id = s.mirror_region_result_id
                         AND i.jobspec_id = s.jobspec_id
                   WHERE s.id = executions_unified_outranks.execution_id
                     AND (s.direct OR coalesce(i.mirrored, false))
                     AND s.rank > executions_unified_outranks.rank);
END
$$;

CREATE OR REPLACE FUNCTION public.executions_unified_derived_outranks(
    region_result_id uuid, model_id text, question_id text, rank public.executions_unified_rank)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM public.executions_unified_derived d
                   WHERE d.region_result_id = executions_unified_derived_outranks.region_result_id
                     AND (d.m).model_id = executions_unified_derived_outranks.model_id
                     AND (d.m).question_id = executions_unified_derived_outranks.question_id
                     AND d.rank > executions_unified_derived_outranks.rank);
END
$$;

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
    WHERE s.direct
      -- no better row of its key (a row without a job has none: it is alone in its key);
      -- the key's index answers, or, for the legacy rows without a model or question id
      -- ('' and NULL question ids alike), its job and region
      AND NOT EXISTS (
          SELECT 1 FROM public.executions e2
          WHERE e2.job_id = s.job_id AND e2.region = s.region
            AND e2.model_id = s.model_id AND e2.question_id = s.question_id
            AND e2.id <> s.id AND public.executions_unified_outranks(e2.id, s.rank))
      AND (s.job_id IS NULL OR (s.model_id IS NOT NULL AND nullif(s.question_id, '') IS NOT NULL)
           OR NOT EXISTS (
               SELECT 1 FROM public.executions e2
               WHERE e2.job_id = s.job_id AND e2.region = s.region
                 AND e2.model_id IS NOT DISTINCT FROM s.model_id
                 AND nullif(e2.question_id, '') IS NOT DISTINCT FROM nullif(s.question_id, '')
                 AND e2.id <> s.id AND public.executions_unified_outranks(e2.id, s.rank)))
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
            AND e2.id <> e.id AND public.executions_unified_outranks(e2.id, k.rank))
      AND NOT EXISTS (
          SELECT 1 FROM public.cross_region_executions x2
          JOIN public.region_results r2 ON r2.cross_region_execution_id = x2.id
          WHERE e.job_id IS NOT NULL
            AND x2.jobspec_id = i.jobspec_id AND r2.region = e.region
            AND r2.id <> e.mirror_region_result_id
            AND public.executions_unified_derived_outranks(
                    r2.id, e.model_id, e.question_id, k.rank))
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
