-- region_results_mirror_inputs: each region result with the inputs of the mirror rule: the
-- row itself, its run (cross_region_executions) and its job (jobs, matched on jobspec_id as the
-- runner does; NULL when the jobs row is missing). Read by the mirror functions and by
-- executions_unified; a plain join, inlined wherever it is used.
CREATE OR REPLACE VIEW public.region_results_mirror_inputs AS
SELECT r AS region_result,
       r.id AS region_result_id,
       r.xmin AS r_xmin,
       r.region,
       r.cross_region_execution_id,
       x.jobspec_id,
       j.id AS job_id,
       j.jobspec_data
FROM public.region_results r
JOIN public.cross_region_executions x ON x.id = r.cross_region_execution_id
LEFT JOIN public.jobs j ON j.jobspec_id = x.jobspec_id;
