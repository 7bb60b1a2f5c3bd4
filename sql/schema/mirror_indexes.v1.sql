-- Mirror (revision 0002), indexes built CONCURRENTLY by migrations/versions/0002_mirror.py before
-- the triggers exist. One statement per line.
-- executions_mirror_pair_key: the partial unique key of mirrored rows, one per region result and
-- pair, NULL question ids equal (SPEC "New objects"); it also finds a region result's rows.
-- executions_direct_key: direct rows by key, for the check "a direct row owns this key" the
-- mirror makes on every write, and for executions_unified's direct rows of a job; partial, so
-- the mirror's own inserts never maintain it.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS executions_mirror_pair_key ON public.executions (mirror_region_result_id, model_id, question_id) NULLS NOT DISTINCT WHERE mirror_region_result_id IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS executions_direct_key ON public.executions (job_id, region, model_id, question_id) WHERE mirror_region_result_id IS NULL;
