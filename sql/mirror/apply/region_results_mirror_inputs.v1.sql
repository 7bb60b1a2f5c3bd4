-- region_results_mirror_inputs: each region result with the inputs of the rule (itself, its run,
-- its job matched on jobspec_id as the runner does, NULL when missing) and its mirror state;
-- `mirrored`, the one definition of "mirrored" (SPEC "Mirror state"). Read by the plan, the view,
-- the triggers, status and verify; a plain join, inlined wherever it is used.
CREATE OR REPLACE VIEW public.region_results_mirror_inputs AS
SELECT r AS region_result,
       r.id AS region_result_id,
       r.xmin AS r_xmin,
       r.region::text AS region,
       r.cross_region_execution_id,
       x.jobspec_id,
       j.id AS job_id,
       j.jobspec_data,
       j.status::text AS job_status,
       public.jobs_mirror_fingerprint(j.id, j.jobspec_data) AS job_fingerprint,
       s.region_result_id IS NOT NULL AS has_state,
       s.r_xmin AS state_xmin,
       s.job_fingerprint AS state_job_fingerprint,
       s.finished AS state_finished,
       coalesce(s.r_xmin OPERATOR(pg_catalog.=) r.xmin
                AND s.job_fingerprint OPERATOR(pg_catalog.=)
                    public.jobs_mirror_fingerprint(j.id, j.jobspec_data),
                false) AS mirrored
FROM public.region_results r
JOIN public.cross_region_executions x ON x.id OPERATOR(pg_catalog.=) r.cross_region_execution_id
LEFT JOIN public.jobs j ON j.jobspec_id OPERATOR(pg_catalog.=) x.jobspec_id
LEFT JOIN public.region_results_mirror_state s ON s.region_result_id OPERATOR(pg_catalog.=) r.id;
