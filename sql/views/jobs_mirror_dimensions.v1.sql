-- jobs_mirror_dimensions(spec): what a job is expected to run, for the portal's progress:
-- regions = jobspec_data.constraints.regions (usable strings, in order, first occurrence kept),
-- models(J) and questions(J) exactly as the mirror rule reads them (jobs_mirror_models,
-- jobs_mirror_questions; models fall back to llama3.2-1b without a region result's model_id).
-- Read by sql/queries/portal.sql. Its search_path is pinned, so that the inlined helpers resolve
-- the same way whatever the reading session's search_path.
CREATE OR REPLACE FUNCTION public.jobs_mirror_dimensions(spec jsonb,
                                                         OUT regions text[],
                                                         OUT models text[],
                                                         OUT questions text[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
-- Index-driven plans: these statements read rows by key, and a generic plan cached while
-- the tables were small must not keep scanning them whole once they have grown.
SET enable_seqscan = off
AS $$
BEGIN
    SELECT ARRAY(SELECT d.v
                 FROM (SELECT DISTINCT ON (r.v) r.v, r.ord
                       FROM jsonb_array_elements_text(
                                CASE WHEN jsonb_typeof(spec #> '{constraints,regions}') = 'array'
                                     THEN spec #> '{constraints,regions}' END)
                            WITH ORDINALITY AS r(v, ord)
                       WHERE r.v <> ''
                       ORDER BY r.v, r.ord) d
                 ORDER BY d.ord),
           ARRAY(SELECT m.model_id FROM public.jobs_mirror_models(spec) m
                 WHERE m.model_id IS NOT NULL ORDER BY m.seq),
           ARRAY(SELECT q.question_id FROM public.jobs_mirror_questions(spec) q
                 WHERE q.question_id IS NOT NULL ORDER BY q.seq)
    INTO regions, models, questions;
END
$$;
