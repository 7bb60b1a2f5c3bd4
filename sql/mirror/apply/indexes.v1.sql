-- The mirror's indexes, built CONCURRENTLY before the triggers exist. One statement per line.
-- executions_mirror_pair_key: the partial unique key of mirrored rows, one per region result and
-- pair (SPEC "New objects"); it also finds a region result's rows. executions_direct_key: direct
-- rows by key ('' and NULL question ids alike), for "a direct row owns this key" and the view.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS executions_mirror_pair_key ON public.executions (mirror_region_result_id, model_id, question_id) NULLS NOT DISTINCT WHERE mirror_region_result_id IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS executions_direct_key ON public.executions (job_id, region, model_id, (nullif(question_id, ''))) WHERE mirror_region_result_id IS NULL;
