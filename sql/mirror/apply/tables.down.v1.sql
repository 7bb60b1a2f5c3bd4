-- Undoes tables.v1.sql once the triggers are gone: mirrored rows are deleted, except those the
-- transparency log references, which are detached and stay as direct rows (SPEC "Downgrades").
DELETE FROM public.executions e
WHERE e.mirror_region_result_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM public.transparency_log t WHERE t.execution_id = e.id);
UPDATE public.executions SET mirror_region_result_id = NULL WHERE mirror_region_result_id IS NOT NULL;
DROP TYPE IF EXISTS public.executions_mirror_change;
DROP TABLE IF EXISTS public.executions_mirror_locks;
DROP TABLE IF EXISTS public.region_results_mirror_anomalies;
DROP TABLE IF EXISTS public.region_results_mirror_state;
DROP TYPE IF EXISTS public.executions_mirror_finding;
DROP TYPE IF EXISTS public.executions_mirror_action;
ALTER TABLE public.executions DROP COLUMN IF EXISTS mirror_evidence;
ALTER TABLE public.executions DROP COLUMN IF EXISTS mirror_region_result_id;
