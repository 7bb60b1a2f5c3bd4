-- The mirror's triggers, created once their functions exist. Named zz_* so that each fires after
-- the runner's own triggers of the same timing (triggers fire in name order). Each CREATE
-- TRIGGER waits for writers in flight on its table; once it commits, every later write fires it.
CREATE OR REPLACE TRIGGER zz_mirror_guard
    BEFORE UPDATE ON public.region_results
    FOR EACH ROW EXECUTE FUNCTION public.region_results_mirror_guard();
CREATE OR REPLACE TRIGGER zz_mirror_update
    AFTER UPDATE ON public.region_results
    FOR EACH ROW EXECUTE FUNCTION public.region_results_mirror_update();
CREATE OR REPLACE TRIGGER zz_mirror_insert
    AFTER INSERT ON public.region_results
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.region_results_mirror_insert();
CREATE OR REPLACE TRIGGER zz_mirror_delete
    AFTER DELETE ON public.region_results
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.region_results_mirror_delete();

CREATE OR REPLACE TRIGGER zz_mirror_insert
    AFTER INSERT ON public.jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.jobs_mirror_insert();
CREATE OR REPLACE TRIGGER zz_mirror_update
    AFTER UPDATE ON public.jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.jobs_mirror_update();

CREATE OR REPLACE TRIGGER zz_mirror_delete
    BEFORE DELETE ON public.cross_region_executions
    FOR EACH ROW EXECUTE FUNCTION public.cross_region_executions_mirror_delete();
CREATE OR REPLACE TRIGGER zz_mirror_update
    AFTER UPDATE ON public.cross_region_executions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.cross_region_executions_mirror_update();

CREATE OR REPLACE TRIGGER zz_mirror_detach
    BEFORE UPDATE ON public.executions
    FOR EACH ROW
    WHEN (OLD.mirror_region_result_id IS NOT NULL AND NEW.mirror_region_result_id IS NOT NULL
          AND public.executions_mirror_row(OLD) IS DISTINCT FROM public.executions_mirror_row(NEW))
    EXECUTE FUNCTION public.executions_mirror_detach();
CREATE OR REPLACE TRIGGER zz_mirror_insert
    AFTER INSERT ON public.executions
    FOR EACH ROW
    WHEN (NEW.mirror_region_result_id IS NULL AND NEW.job_id IS NOT NULL
          AND nullif(NEW.question_id, '') IS NOT NULL)
    EXECUTE FUNCTION public.executions_mirror_insert();
CREATE OR REPLACE TRIGGER zz_mirror_update
    AFTER UPDATE ON public.executions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.executions_mirror_update();
CREATE OR REPLACE TRIGGER zz_mirror_delete
    AFTER DELETE ON public.executions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.executions_mirror_delete();
