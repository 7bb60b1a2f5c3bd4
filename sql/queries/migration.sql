-- Where a database stands: its stamp, the objects that show each revision's work, what the
-- baseline found and made. Read by beaconsql.migration (status, upgrade, every command's
-- check that the database is at head). Parameters are psycopg named placeholders.

-- name: version_table
-- Whether Alembic's version table exists (it does once any revision ran, or after a stamp).
SELECT to_regclass('public.alembic_version') IS NOT NULL;

-- name: version
-- The revision the database is stamped at.
SELECT version_num FROM public.alembic_version LIMIT 1;

-- name: revision_objects
-- The objects by which each revision's work is recognised, and whether each is present: a
-- stamp that disagrees with them (after `alembic stamp`, or a hand-dropped object) is told
-- apart from the truth. Every revision has at least one; the objects the commands read
-- (queries/status.sql, portal.sql, verify.sql) are among them, so that a command never meets a
-- missing column where the stamp promised it. runner: a table or column of the runner's that
-- the baseline verifies or adds (adopted, never dropped). Kinds: relation (a table or view),
-- column and trigger (table.name), function (a name in public), function version (a name in
-- public and, after a space, a text that only that version's body holds).
SELECT o.revision, o.kind, o.name,
       CASE o.kind
           WHEN 'relation' THEN to_regclass('public.' || o.name) IS NOT NULL
           WHEN 'column' THEN EXISTS (
               SELECT 1 FROM pg_catalog.pg_attribute a
               WHERE a.attrelid = to_regclass('public.' || split_part(o.name, '.', 1))
                 AND a.attname = split_part(o.name, '.', 2) AND a.attnum > 0 AND NOT a.attisdropped)
           WHEN 'trigger' THEN EXISTS (
               SELECT 1 FROM pg_catalog.pg_trigger t
               WHERE t.tgrelid = to_regclass('public.' || split_part(o.name, '.', 1))
                 AND t.tgname = split_part(o.name, '.', 2))
           WHEN 'function' THEN EXISTS (
               SELECT 1 FROM pg_catalog.pg_proc p
               WHERE p.pronamespace = 'public'::regnamespace AND p.proname = o.name)
           WHEN 'function version' THEN EXISTS (
               SELECT 1 FROM pg_catalog.pg_proc p
               WHERE p.pronamespace = 'public'::regnamespace
                 AND p.proname = split_part(o.name, ' ', 1)
                 AND strpos(p.prosrc, substr(o.name, strpos(o.name, ' ') + 1)) > 0)
       END AS present,
       o.runner
FROM (VALUES
    (1, '0001', 'relation', 'jobs', true),
    (2, '0001', 'relation', 'executions', true),
    (3, '0001', 'relation', 'cross_region_executions', true),
    (4, '0001', 'relation', 'region_results', true),
    (5, '0001', 'relation', 'cross_region_analyses', true),
    (6, '0001', 'relation', 'transparency_log', true),
    (7, '0001', 'column', 'executions.question_id', true),
    (8, '0001', 'column', 'cross_region_analyses.summary_source', true),
    (9, '0001', 'relation', 'beaconsql_baseline_objects', false),
    (10, '0002', 'column', 'executions.mirror_region_result_id', false),
    (11, '0002', 'column', 'executions.mirror_evidence', false),
    (12, '0002', 'relation', 'region_results_mirror_state', false),
    (13, '0002', 'relation', 'region_results_mirror_anomalies', false),
    (14, '0002', 'relation', 'region_results_mirror_inputs', false),
    (15, '0002', 'relation', 'executions_mirror_locks', false),
    (16, '0002', 'function', 'region_results_mirror_apply', false),
    (17, '0002', 'trigger', 'region_results.zz_mirror_update', false),
    (18, '0003', 'relation', 'executions_unified', false),
    (19, '0004', 'relation', 'region_results_backfill_runs', false),
    (20, '0005', 'relation', 'region_results_verify_runs', false),
    (21, '0005', 'function', 'serve_metrics', false),
    (22, '0006', 'function', 'executions_unified_of_job', false),
    (23, '0006', 'function', 'executions_unified_of_execution', false),
    (24, '0007', 'function', 'region_results_mirror_output_changed', false),
    (25, '0008', 'function', 'executions_unified_derives', false),
    (26, '0009', 'function', 'cross_region_executions_mirror_lock_rows', false),
    (27, '0010', 'function version', 'region_results_mirror_elements pg_catalog.jsonb_typeof', false),
    (28, '0011', 'function', 'region_results_mirror_narrow', false)
) AS o(position, revision, kind, name, runner)
ORDER BY o.position;

-- name: baseline_record_exists
-- Whether the baseline's record of what it created exists (the baseline ran at least once).
SELECT to_regclass('public.beaconsql_baseline_objects') IS NOT NULL;

-- name: baseline_record_last_id
-- The newest entry of that record, so that an upgrade can tell what it adds to it.
SELECT coalesce(max(id), 0) FROM public.beaconsql_baseline_objects;

-- name: baseline_record_since
-- What the baseline recorded as created after a given entry, in the order it created it.
SELECT object_type, object_name
FROM public.beaconsql_baseline_objects
WHERE id > %(id)s
ORDER BY id;

-- name: table_columns
-- The columns of the given tables of the public schema, as (table, column), in table order.
SELECT c.relname, a.attname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%(tables)s::text[])
ORDER BY array_position(%(tables)s::text[], c.relname::text), a.attnum;
