-- Mirror (revision 0002), the partial unique key of mirrored rows: one row per region result
-- and pair, NULL question ids equal (SPEC "New objects"). Built CONCURRENTLY by
-- migrations/versions/0002_mirror.py before the triggers exist. One statement per line.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS executions_mirror_pair_key ON public.executions (mirror_region_result_id, model_id, question_id) NULLS NOT DISTINCT WHERE mirror_region_result_id IS NOT NULL;
