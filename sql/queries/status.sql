-- What `beaconsql status` reports. Read by beaconsql.status.

-- name: mirror_triggers
-- The mirror's triggers and whether they fire: tgenabled O (origin, the default), A (always),
-- R (replica only), D (disabled).
SELECT c.relname AS table_name, t.tgname AS trigger_name,
       CASE t.tgenabled WHEN 'O' THEN 'enabled' WHEN 'A' THEN 'always'
                        WHEN 'R' THEN 'replica only' ELSE 'disabled' END AS state
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = 'public'::regnamespace
  AND NOT t.tgisinternal
  AND t.tgname LIKE 'zz\_mirror%'
ORDER BY c.relname, t.tgname;

-- name: counts
-- Row counts of the runner's tables the mirror links.
SELECT (SELECT count(*) FROM public.region_results) AS region_results,
       (SELECT count(*) FROM public.executions) AS executions;

-- name: mirror_counts
-- Executions by kind (direct, mirrored, detached), region results not mirrored, mirror states
-- left by region results deleted while triggers were skipped, anomalies recorded.
SELECT count(*) FILTER (WHERE e.mirror_region_result_id IS NULL AND e.mirror_evidence IS NULL) AS direct,
       count(*) FILTER (WHERE e.mirror_region_result_id IS NOT NULL) AS mirrored,
       count(*) FILTER (WHERE e.mirror_region_result_id IS NULL AND e.mirror_evidence IS NOT NULL) AS detached,
       (SELECT count(*) FROM public.region_results_mirror_inputs i WHERE NOT i.mirrored) AS not_mirrored,
       (SELECT count(*) FROM public.region_results_mirror_state s
        WHERE NOT EXISTS (SELECT 1 FROM public.region_results r WHERE r.id = s.region_result_id)) AS deleted_unmirrored,
       (SELECT count(*) FROM public.region_results_mirror_anomalies) AS anomalies
FROM public.executions e;
