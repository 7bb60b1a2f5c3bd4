-- region_results_mirror_element_row(r, region_status, element): the executions values the
-- mirror rule derives from one per-pair result element of region result r, whose own status
-- (in the executions vocabulary) is region_status (SPEC "Per-pair results", "Finished region,
-- unfinished element", "Row fields"): status, times (the element's, else the region's; naive
-- UTC; NULL completed_at while unfinished), output, receipt, error; plus what the rule records as
-- anomalies (an unknown status, an invalid time, an unfinished element on a finished region).
-- Read by region_results_mirror_rows (the rule) and, for one appended element, by the trigger
-- function region_results_mirror.
CREATE OR REPLACE FUNCTION public.region_results_mirror_element_row(
    r public.region_results, region_status text, element jsonb)
RETURNS TABLE (status text, started_at timestamp, completed_at timestamp, output_data jsonb,
               receipt_data jsonb, original_error text, element_status text,
               status_unknown boolean, invalid_started_at boolean,
               invalid_completed_at boolean, unfinished boolean)
LANGUAGE sql STABLE PARALLEL SAFE ROWS 1
-- No SET search_path, so that it inlines into the rule (whose search_path is pinned).
AS $$
    -- Each level is computed once (OFFSET 0 keeps the planner from flattening the subqueries,
    -- which would copy every expression into each place that uses it).
    SELECT CASE WHEN e.unfinished THEN 'failed' ELSE e.element_status END,
           coalesce(e.el_started, r.started_at AT TIME ZONE 'UTC'),
           CASE WHEN e.unfinished OR e.element_status NOT IN ('pending', 'running')
                THEN coalesce(e.el_completed, r.completed_at AT TIME ZONE 'UTC') END,
           nullif(element -> 'output', 'null'),
           nullif(element -> 'receipt', 'null'),
           CASE WHEN e.unfinished THEN 'no result recorded'
                ELSE nullif(element ->> 'error', '') END,
           e.element_status,
           e.status_unknown,
           e.el_started IS NULL AND jsonb_typeof(element -> 'started_at') <> 'null',
           e.el_completed IS NULL AND jsonb_typeof(element -> 'completed_at') <> 'null',
           e.unfinished
    FROM (SELECT s.*, s.element_status IN ('pending', 'running')
                      AND region_status IN ('completed', 'failed', 'cancelled') AS unfinished
          FROM (SELECT coalesce(w.word_status,
                                CASE WHEN jsonb_typeof(element -> 'completed_at') <> 'null'
                                          OR r.completed_at IS NOT NULL
                                     THEN 'failed' ELSE 'pending' END) AS element_status,
                       w.word_status IS NULL AS status_unknown, w.el_started, w.el_completed
                FROM (SELECT public.executions_mirror_status(element ->> 'status') AS word_status,
                             public.executions_mirror_time(element -> 'started_at') AS el_started,
                             public.executions_mirror_time(element -> 'completed_at') AS el_completed
                      OFFSET 0) w
                OFFSET 0) s
          OFFSET 0) e
$$;
