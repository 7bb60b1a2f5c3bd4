-- region_results_mirror_inputs: each region result with the inputs of the mirror rule (the
-- row itself, its run, its job matched on jobspec_id as the runner does, NULL when the jobs
-- row is missing) and its mirror state. `mirrored` is the one definition of "mirrored" (SPEC
-- "Mirror state"): the state records this very version of the region result (its xmin) and
-- of what the rule reads from its job (jobs_mirror_fingerprint). A region result written,
-- changed or re-jobbed while triggers were skipped is therefore not mirrored.
-- Read by the mirror functions, executions_unified, `beaconsql status` and verify; a plain
-- join, inlined wherever it is used.
CREATE OR REPLACE VIEW public.region_results_mirror_inputs AS
SELECT r AS region_result,
       r.id AS region_result_id,
       r.xmin AS r_xmin,
       r.region,
       r.cross_region_execution_id,
       x.jobspec_id,
       j.id AS job_id,
       j.jobspec_data,
       public.jobs_mirror_fingerprint(j.id, j.jobspec_data) AS job_fingerprint,
       s.region_result_id IS NOT NULL AS has_state,
       s.r_xmin AS state_xmin,
       s.job_fingerprint AS state_job_fingerprint,
       coalesce(s.r_xmin = r.xmin
                AND s.job_fingerprint = public.jobs_mirror_fingerprint(j.id, j.jobspec_data),
                false) AS mirrored
FROM public.region_results r
JOIN public.cross_region_executions x ON x.id = r.cross_region_execution_id
LEFT JOIN public.jobs j ON j.jobspec_id = x.jobspec_id
LEFT JOIN public.region_results_mirror_state s ON s.region_result_id = r.id;
