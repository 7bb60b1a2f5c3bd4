-- executions_unified_of_job(jobspec_id), executions_unified_of_execution(execution_id)
-- (revision 0006): the rows executions_unified shows for one job, or with one execution id;
-- what the portal's scoped reads select from (sql/queries/portal.sql).
--
-- The view's plan is large: planning a read of it costs about 3 ms, 20 times the runner's own
-- read of executions, and a client behind a transaction pooler (prepared statements off) pays
-- it on every read. PL/pgSQL keeps the plan of its statement for the life of the connection,
-- so each connection plans the view once (a generic plan, the same for every job: every job
-- is read through the same indexes) and a read plans only a function scan. Whoever calls
-- them reads with their own rights: SELECT on the view is what they need.
CREATE OR REPLACE FUNCTION public.executions_unified_of_job(jobspec_id text)
RETURNS SETOF public.executions_unified
LANGUAGE plpgsql STABLE ROWS 20
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
-- the plan is kept: one made while the tables were small must not scan them whole later
SET enable_seqscan = off
SET jit = off
AS $$
BEGIN
    RETURN QUERY SELECT * FROM public.executions_unified u
                 WHERE u.jobspec_id = executions_unified_of_job.jobspec_id;
END
$$;

CREATE OR REPLACE FUNCTION public.executions_unified_of_execution(execution_id bigint)
RETURNS SETOF public.executions_unified
LANGUAGE plpgsql STABLE ROWS 1
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
AS $$
BEGIN
    RETURN QUERY SELECT * FROM public.executions_unified u
                 WHERE u.execution_id = executions_unified_of_execution.execution_id;
END
$$;
