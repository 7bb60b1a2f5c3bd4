-- region_results_mirror_element_row(region_status, region_started, region_completed, element):
-- the values the rule derives from one per-pair result element of a region result with that
-- status (executions vocabulary) and times (naive UTC), and what it records as anomalies.
-- Read by the rule and the append path (inlined: no SET search_path).
CREATE OR REPLACE FUNCTION public.region_results_mirror_element_row(
    region_status text, region_started timestamp, region_completed timestamp, element jsonb)
RETURNS TABLE (status text, started_at timestamp, completed_at timestamp, output_data jsonb,
               receipt_data jsonb, original_error text, element_status text,
               status_unknown boolean, invalid_started_at boolean, invalid_completed_at boolean,
               unreadable_started_at boolean, unreadable_completed_at boolean,
               unfinished boolean)
LANGUAGE sql STABLE PARALLEL SAFE ROWS 1
AS $$
    -- OFFSET 0 computes each level once (the planner would otherwise copy every expression
    -- into each place that uses it).
    SELECT CASE WHEN s.unfinished THEN 'failed' ELSE s.element_status END,
           coalesce(s.started, CASE WHEN public.executions_mirror_readable(region_started)
                                    THEN region_started END),
           CASE WHEN s.unfinished OR s.element_status NOT IN ('pending', 'running')
                THEN coalesce(s.completed, CASE WHEN public.executions_mirror_readable(region_completed)
                                                THEN region_completed END) END,
           nullif(element -> 'output', 'null'),
           nullif(element -> 'receipt', 'null'),
           CASE WHEN s.unfinished THEN 'no result recorded'
                ELSE nullif(element ->> 'error', '') END,
           s.element_status,
           s.word_status IS NULL,
           s.started_raw IS NULL AND coalesce(jsonb_typeof(element -> 'started_at') <> 'null', false),
           s.completed_raw IS NULL AND coalesce(jsonb_typeof(element -> 'completed_at') <> 'null', false),
           s.started_raw IS NOT NULL AND s.started IS NULL,
           s.completed_raw IS NOT NULL AND s.completed IS NULL,
           s.unfinished
    FROM (SELECT w.*,
                 w.element_status IN ('pending', 'running')
                     AND public.executions_mirror_finished(region_status) AS unfinished
          FROM (SELECT t.*,
                       coalesce(t.word_status,
                                CASE WHEN coalesce(jsonb_typeof(element -> 'completed_at') <> 'null', false)
                                          OR region_completed IS NOT NULL
                                     THEN 'failed' ELSE 'pending' END) AS element_status,
                       CASE WHEN public.executions_mirror_readable(t.started_raw)
                            THEN t.started_raw END AS started,
                       CASE WHEN public.executions_mirror_readable(t.completed_raw)
                            THEN t.completed_raw END AS completed
                FROM (SELECT public.executions_mirror_status(element ->> 'status') AS word_status,
                             public.executions_mirror_time(element -> 'started_at') AS started_raw,
                             public.executions_mirror_time(element -> 'completed_at') AS completed_raw
                      OFFSET 0) t
                OFFSET 0) w
          OFFSET 0) s
$$;
