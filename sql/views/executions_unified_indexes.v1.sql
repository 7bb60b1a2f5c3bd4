-- The view's own index, built CONCURRENTLY by revision 0003. One statement per line.
-- executions_created_at_utc: executions in the order of the view's created_at (timestamptz,
-- which the runner's plain-timestamp index cannot serve), for the newest-first list.
CREATE INDEX CONCURRENTLY IF NOT EXISTS executions_created_at_utc ON public.executions ((CASE WHEN public.executions_mirror_readable(created_at) THEN created_at AT TIME ZONE 'UTC' END));
