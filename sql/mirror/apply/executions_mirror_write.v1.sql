-- executions_mirror_insert(rows) / executions_mirror_update(ids, rows): write mirror rows into
-- executions, every column the mirror owns (executions_mirror_row) and none other (the rest
-- keep their defaults, or their values). Called by apply and the append path only.
CREATE OR REPLACE FUNCTION public.executions_mirror_insert(rows public.executions_mirror_row[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    INSERT INTO public.executions (
        job_id, cross_region_execution_id, region, provider_id, model_id, question_id,
        status, started_at, completed_at, created_at, output_data, receipt_data,
        original_error, mirror_region_result_id, mirror_evidence)
    SELECT r.* FROM unnest(rows) r;
END
$$;

CREATE OR REPLACE FUNCTION public.executions_mirror_update(ids integer[],
                                                           rows public.executions_mirror_row[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    UPDATE public.executions e
    SET (job_id, cross_region_execution_id, region, provider_id, model_id, question_id,
         status, started_at, completed_at, created_at, output_data, receipt_data,
         original_error, mirror_region_result_id, mirror_evidence) = (SELECT (rows[u.n]).*)
    FROM generate_subscripts(ids, 1) AS u(n)
    WHERE e.id = ids[u.n];
END
$$;
