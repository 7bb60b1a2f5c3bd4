-- Baseline (revision 0001) downgrade: drops exactly what the baseline created, newest first,
-- as recorded in beaconsql_baseline_objects; adopted objects and columns stay, since the
-- runner owns and writes them. Read by migrations/versions/0001_baseline.py, online and
-- offline alike. Never CASCADE: an object of someone else's that depends on one of ours
-- stops the downgrade with PostgreSQL's message naming it.
DO $downgrade$
DECLARE
    obj record;
    rows_held text[] := '{}';
    n bigint;
BEGIN
    IF to_regclass('public.beaconsql_baseline_objects') IS NULL THEN
        RETURN;
    END IF;
    -- A later revision interrupted after its autocommit part leaves objects the baseline's
    -- downgrade must not strand: finish that revision first.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
               WHERE attrelid = to_regclass('public.executions')
                 AND attname IN ('mirror_region_result_id', 'mirror_evidence') AND NOT attisdropped)
       OR to_regclass('public.region_results_mirror_state') IS NOT NULL THEN
        RAISE EXCEPTION 'baseline downgrade stopped: objects of revision 0002 (the mirror) are '
                        'still here (executions.mirror_region_result_id, region_results_mirror_state)'
            USING HINT = 'An upgrade to 0002 was interrupted. Run `beaconsql upgrade` to finish it, '
                         'then downgrade again.';
    END IF;
    -- A table the baseline created may since hold the runner's rows: refuse to lose them.
    FOR obj IN SELECT object_name FROM public.beaconsql_baseline_objects
               WHERE object_type = 'table' AND to_regclass('public.' || object_name) IS NOT NULL
               ORDER BY id
    LOOP
        EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM public.%I LIMIT 1000000) t', obj.object_name) INTO n;
        IF n > 0 THEN
            rows_held := rows_held || format('%s (%s rows)', obj.object_name, n);
        END IF;
    END LOOP;
    IF cardinality(rows_held) > 0 THEN
        RAISE EXCEPTION 'baseline downgrade stopped: tables beaconsql created now hold rows: %',
            array_to_string(rows_held, ', ')
            USING HINT = 'Dropping them would lose those rows. Export or delete the rows first, '
                         'or stay at revision 0001.';
    END IF;

    -- Objects on tables that stay (adopted ones), then views, then all created tables in one
    -- statement (they reference each other), then what only they used.
    FOR obj IN SELECT * FROM public.beaconsql_baseline_objects
               WHERE object_type IN ('trigger', 'constraint', 'index') ORDER BY id DESC
    LOOP
        IF obj.object_type = 'index' THEN
            EXECUTE format('DROP INDEX IF EXISTS public.%I', obj.object_name);
        ELSIF to_regclass('public.' || obj.table_name) IS NULL THEN
            CONTINUE;
        ELSIF obj.object_type = 'trigger' THEN
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON public.%I', obj.object_name, obj.table_name);
        ELSE
            EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT IF EXISTS %I',
                           obj.table_name, obj.object_name);
        END IF;
    END LOOP;
    FOR obj IN SELECT * FROM public.beaconsql_baseline_objects
               WHERE object_type = 'view' ORDER BY id DESC
    LOOP
        EXECUTE format('DROP VIEW IF EXISTS public.%I', obj.object_name);
    END LOOP;
    PERFORM 1 FROM public.beaconsql_baseline_objects
    WHERE object_type = 'table' AND to_regclass('public.' || object_name) IS NOT NULL;
    IF FOUND THEN
        EXECUTE (SELECT 'DROP TABLE ' || string_agg(format('public.%I', object_name), ', ' ORDER BY id)
                 FROM public.beaconsql_baseline_objects
                 WHERE object_type = 'table' AND to_regclass('public.' || object_name) IS NOT NULL);
    END IF;
    FOR obj IN SELECT * FROM public.beaconsql_baseline_objects
               WHERE object_type IN ('function', 'sequence') ORDER BY id DESC
    LOOP
        IF obj.object_type = 'sequence' THEN
            EXECUTE format('DROP SEQUENCE IF EXISTS public.%I', obj.object_name);
        ELSIF to_regprocedure('public.' || obj.object_name) IS NOT NULL THEN
            EXECUTE format('DROP FUNCTION %s', to_regprocedure('public.' || obj.object_name));
        END IF;
    END LOOP;
    DROP TABLE public.beaconsql_baseline_objects;
END
$downgrade$;
