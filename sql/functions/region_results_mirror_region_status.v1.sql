-- region_results_mirror_region_status(r): region result r's status in the executions
-- vocabulary (executions_mirror_status); an unknown word maps to failed when r has a
-- completed_at, else pending (SPEC "The mirror rule", Status). Read by the rule and the trigger.
CREATE OR REPLACE FUNCTION public.region_results_mirror_region_status(r public.region_results)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- No SET search_path, so that it inlines into its callers (whose search_path is pinned).
AS $$
    SELECT coalesce(public.executions_mirror_status(r.status),
                    CASE WHEN r.completed_at IS NOT NULL THEN 'failed' ELSE 'pending' END)
$$;
