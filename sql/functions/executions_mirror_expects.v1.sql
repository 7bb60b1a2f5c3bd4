-- executions_mirror_expects(e, exactly): whether the mirror rule yields executions row e's pair
-- for its region result, no direct row owning the key; with exactly, also with e's values in
-- every column the mirror owns. The trigger functions executions_mirror_detach and
-- executions_mirror_forget use it to tell the mirror's own writes (the backfill writes at
-- trigger depth 0, as any client does) from everyone else's.
CREATE OR REPLACE FUNCTION public.executions_mirror_expects(e public.executions, exactly boolean)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1
        FROM public.region_results_mirror_inputs i
        CROSS JOIN LATERAL public.region_results_mirror_rows(
            i.region_result, i.job_id, i.jobspec_data,
            ARRAY[jsonb_build_array(e.model_id, e.question_id)::text]) f
        WHERE i.region_result_id = e.mirror_region_result_id
          AND f.evidence IS NOT NULL
          AND (NOT exactly OR (f.job_id, f.cross_region_execution_id, f.region, f.provider_id, f.status,
               f.started_at, f.completed_at, f.created_at, f.output_data, f.receipt_data,
               f.original_error, f.evidence)
              IS NOT DISTINCT FROM
              (e.job_id, e.cross_region_execution_id, e.region::text, e.provider_id::text,
               e.status::text, e.started_at, e.completed_at, e.created_at, e.output_data,
               e.receipt_data, e.original_error, e.mirror_evidence))
          AND NOT EXISTS (
              SELECT 1 FROM public.executions d
              WHERE d.mirror_region_result_id IS NULL AND d.job_id = f.job_id
                AND d.region = f.region AND d.model_id = f.model_id
                AND d.question_id = f.question_id))
$$;
