-- executions_mirror_row(e): the columns of executions row e that the mirror owns, as one value
-- of type executions_mirror_row: every "did it change" is one IS DISTINCT FROM of two of them.
-- Read by the plan, the detach trigger and verify (inlined: no SET search_path).
CREATE OR REPLACE FUNCTION public.executions_mirror_row(e public.executions)
RETURNS public.executions_mirror_row
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ROW(e.job_id, e.cross_region_execution_id, e.region, e.provider_id, e.model_id,
               e.question_id, e.status, e.started_at, e.completed_at, e.created_at,
               e.output_data, e.receipt_data, e.original_error, e.mirror_region_result_id,
               e.mirror_evidence)::public.executions_mirror_row
$$;
