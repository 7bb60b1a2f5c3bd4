-- Mirror (revision 0002) downgrade. Read by migrations/versions/0002_mirror.py. Drops the
-- triggers first (no more mirroring), deletes the mirrored rows, except those the transparency
-- log references, which are detached and stay as direct rows (SPEC "Downgrades"), then drops
-- the functions, tables and columns the mirror added. Nothing of the runner's is touched.

DROP TRIGGER IF EXISTS zz_mirror_guard ON public.region_results;
DROP TRIGGER IF EXISTS zz_mirror ON public.region_results;
DROP TRIGGER IF EXISTS zz_mirror ON public.jobs;
DROP TRIGGER IF EXISTS zz_mirror ON public.cross_region_executions;
DROP TRIGGER IF EXISTS zz_mirror_detach ON public.executions;
DROP TRIGGER IF EXISTS zz_mirror_forget ON public.executions;
DROP TRIGGER IF EXISTS zz_mirror_direct_insert ON public.executions;
DROP TRIGGER IF EXISTS zz_mirror_direct_update ON public.executions;
DROP TRIGGER IF EXISTS zz_mirror_direct_delete ON public.executions;

DELETE FROM public.executions e
WHERE e.mirror_region_result_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM public.transparency_log t WHERE t.execution_id = e.id);
UPDATE public.executions SET mirror_region_result_id = NULL WHERE mirror_region_result_id IS NOT NULL;

DROP FUNCTION IF EXISTS public.executions_mirror_claim();
DROP FUNCTION IF EXISTS public.executions_mirror_forget();
DROP FUNCTION IF EXISTS public.executions_mirror_detach();
DROP FUNCTION IF EXISTS public.executions_mirror_expects(public.executions, boolean);
DROP FUNCTION IF EXISTS public.cross_region_executions_mirror();
DROP FUNCTION IF EXISTS public.jobs_mirror();
DROP FUNCTION IF EXISTS public.region_results_mirror_guard();
DROP FUNCTION IF EXISTS public.region_results_mirror();
DROP FUNCTION IF EXISTS public.region_results_mirror_apply(uuid[], text[], text, boolean, integer, text);
DROP FUNCTION IF EXISTS public.region_results_mirror_plan(uuid[], text[], text);
DROP TYPE IF EXISTS public.region_results_mirror_change;
DROP FUNCTION IF EXISTS public.executions_mirror_lock_pause(timestamptz, integer);
DROP FUNCTION IF EXISTS public.region_results_mirror_append(public.region_results, public.region_results);
DROP FUNCTION IF EXISTS public.region_results_mirror_changed_pairs(jsonb, jsonb);
DROP VIEW IF EXISTS public.region_results_mirror_inputs;
DROP FUNCTION IF EXISTS public.executions_mirror_lock_key(integer, text, uuid);
DROP FUNCTION IF EXISTS public.jobs_mirror_fingerprint(integer, jsonb);
DROP FUNCTION IF EXISTS public.region_results_mirror_rows(public.region_results, integer, jsonb, text[]);
DROP FUNCTION IF EXISTS public.region_results_mirror_element_row(public.region_results, text, jsonb);
DROP FUNCTION IF EXISTS public.region_results_mirror_region_status(public.region_results);
DROP FUNCTION IF EXISTS public.executions_mirror_time(jsonb);
DROP FUNCTION IF EXISTS public.executions_mirror_status(text);
DROP FUNCTION IF EXISTS public.jobs_mirror_questions(jsonb);
DROP FUNCTION IF EXISTS public.jobs_mirror_models(jsonb, text);
DROP FUNCTION IF EXISTS public.region_results_mirror_elements(jsonb);

DROP TABLE IF EXISTS public.region_results_mirror_anomalies;
DROP TABLE IF EXISTS public.region_results_mirror_state;
ALTER TABLE public.executions DROP COLUMN IF EXISTS mirror_evidence;
ALTER TABLE public.executions DROP COLUMN IF EXISTS mirror_region_result_id;
