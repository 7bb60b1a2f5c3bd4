-- executions_mirror_status(word): a status word of the runner (region or pair) in the executions
-- vocabulary, matched case-insensitively after trimming (SPEC "The mirror rule", Status):
-- success/completed/succeeded/done/finished -> completed; failed/error/timeout -> failed;
-- running/processing/retrying -> running; queued/pending/NULL -> pending; cancelled/canceled ->
-- cancelled. NULL for any other word: the caller applies the SPEC's fallback and records an
-- anomaly. Read by the mirror rule (region_results_mirror_rows, region_results_mirror_element_row).
CREATE OR REPLACE FUNCTION public.executions_mirror_status(word text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- No SET search_path, on purpose: it would stop the planner from inlining this expression into
-- the mirror rule, whose own search_path is pinned.
AS $$
    SELECT CASE lower(btrim(coalesce(word, 'pending'), E' \t\n\r\f\v'))
               WHEN 'success' THEN 'completed' WHEN 'completed' THEN 'completed'
               WHEN 'succeeded' THEN 'completed' WHEN 'done' THEN 'completed'
               WHEN 'finished' THEN 'completed'
               WHEN 'failed' THEN 'failed' WHEN 'error' THEN 'failed' WHEN 'timeout' THEN 'failed'
               WHEN 'running' THEN 'running' WHEN 'processing' THEN 'running'
               WHEN 'retrying' THEN 'running'
               WHEN 'queued' THEN 'pending' WHEN 'pending' THEN 'pending'
               WHEN 'cancelled' THEN 'cancelled' WHEN 'canceled' THEN 'cancelled'
           END
$$;
