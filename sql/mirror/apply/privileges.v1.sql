-- Who may call what (SPEC "Only the mirror's owner can redirect it"): PUBLIC keeps EXECUTE on the
-- rule's functions only, which the view calls and which read no table; the functions that lock,
-- plan or write run with their owner's rights (SECURITY DEFINER) and for the triggers only.
REVOKE EXECUTE ON FUNCTION
    public.executions_mirror_lock(text[]),
    public.region_results_mirror_lock(uuid[], text[]),
    public.executions_mirror_insert(public.executions_mirror_row[]),
    public.executions_mirror_update(integer[], public.executions_mirror_row[]),
    public.region_results_mirror_plan(uuid[], text[], boolean),
    public.region_results_mirror_apply(uuid[], text[], boolean, text[], boolean),
    public.region_results_mirror_append(public.region_results, jsonb, jsonb),
    public.region_results_mirror_hold_state(uuid, text),
    public.region_results_mirror_changed_pairs(jsonb, jsonb),
    public.region_results_mirror_guard(),
    public.region_results_mirror_update(),
    public.region_results_mirror_insert(),
    public.region_results_mirror_delete(),
    public.jobs_mirror_insert(),
    public.jobs_mirror_update(),
    public.cross_region_executions_mirror_delete(),
    public.cross_region_executions_mirror_update(),
    public.executions_mirror_detach(),
    public.executions_mirror_claim(text[]),
    public.executions_mirror_insert(),
    public.executions_mirror_update(),
    public.executions_mirror_delete()
FROM PUBLIC;
REVOKE ALL ON public.region_results_mirror_state, public.region_results_mirror_anomalies,
              public.executions_mirror_locks FROM PUBLIC;
