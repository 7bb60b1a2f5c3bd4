-- Mirror (revision 0002), the triggers. Read by migrations/versions/0002_mirror.py, after the
-- functions exist. Named zz_* so that they fire after the runner's own triggers of the same
-- timing (triggers fire in name order). Each CREATE TRIGGER waits for writers in flight on its
-- table; once it commits, every later write fires it.

CREATE OR REPLACE TRIGGER zz_mirror_guard
    BEFORE UPDATE ON public.region_results
    FOR EACH ROW EXECUTE FUNCTION public.region_results_mirror_guard();
CREATE OR REPLACE TRIGGER zz_mirror
    AFTER INSERT OR UPDATE OR DELETE ON public.region_results
    FOR EACH ROW EXECUTE FUNCTION public.region_results_mirror();

CREATE OR REPLACE TRIGGER zz_mirror
    AFTER INSERT OR UPDATE OF jobspec_data, jobspec_id ON public.jobs
    FOR EACH ROW EXECUTE FUNCTION public.jobs_mirror();

CREATE OR REPLACE TRIGGER zz_mirror
    BEFORE DELETE ON public.cross_region_executions
    FOR EACH ROW EXECUTE FUNCTION public.cross_region_executions_mirror();

CREATE OR REPLACE TRIGGER zz_mirror_detach
    BEFORE UPDATE ON public.executions
    FOR EACH ROW
    WHEN (OLD.mirror_region_result_id IS NOT NULL AND pg_trigger_depth() = 0)
    EXECUTE FUNCTION public.executions_mirror_detach();
CREATE OR REPLACE TRIGGER zz_mirror_forget
    AFTER DELETE ON public.executions
    FOR EACH ROW
    WHEN (OLD.mirror_region_result_id IS NOT NULL AND pg_trigger_depth() = 0)
    EXECUTE FUNCTION public.executions_mirror_forget();
CREATE OR REPLACE TRIGGER zz_mirror_direct_insert
    AFTER INSERT ON public.executions
    FOR EACH ROW
    WHEN (NEW.mirror_region_result_id IS NULL AND NEW.job_id IS NOT NULL)
    EXECUTE FUNCTION public.executions_mirror_claim();
CREATE OR REPLACE TRIGGER zz_mirror_direct_update
    AFTER UPDATE ON public.executions
    FOR EACH ROW
    WHEN (NEW.mirror_region_result_id IS NULL
          AND (OLD.mirror_region_result_id IS NOT NULL
               OR (OLD.job_id, OLD.region, OLD.model_id, OLD.question_id)
                  IS DISTINCT FROM (NEW.job_id, NEW.region, NEW.model_id, NEW.question_id)))
    EXECUTE FUNCTION public.executions_mirror_claim();
CREATE OR REPLACE TRIGGER zz_mirror_direct_delete
    AFTER DELETE ON public.executions
    FOR EACH ROW
    WHEN (OLD.mirror_region_result_id IS NULL AND OLD.job_id IS NOT NULL)
    EXECUTE FUNCTION public.executions_mirror_claim();
