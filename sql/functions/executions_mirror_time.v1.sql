-- executions_mirror_time(value): a per-pair element's time (an ISO 8601 / RFC 3339 JSON string)
-- as naive UTC, the way executions stores times; a time without a zone is UTC. NULL when the
-- value is absent, not a string, or not a valid time (SPEC "Row fields": the caller falls back
-- to the region's time and records an anomaly). Validated before any cast, so that bad input
-- never raises (PostgreSQL 15 has no pg_input_is_valid). Read by
-- region_results_mirror_element_row.
CREATE OR REPLACE FUNCTION public.executions_mirror_time(value jsonb)
RETURNS timestamp
LANGUAGE sql STABLE PARALLEL SAFE
-- STABLE: the text-to-timestamptz cast is; with a zone in the text its result does not depend on
-- the session. No SET search_path, so that it inlines into the rule (whose search_path is pinned).
AS $$
    SELECT CASE
        WHEN jsonb_typeof(value) IS DISTINCT FROM 'string' THEN NULL
        WHEN (value #>> '{}') !~ ('^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])'
                                  '([Tt ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?'
                                  '(Z|z|[+-](0[0-9]|1[0-5])(:?[0-5][0-9])?)?)?$') THEN NULL
        WHEN substr(value #>> '{}', 1, 4)::int < 1 THEN NULL
        WHEN substr(value #>> '{}', 9, 2)::int
             > extract(day FROM make_date(substr(value #>> '{}', 1, 4)::int,
                                          substr(value #>> '{}', 6, 2)::int, 1)
                                + interval '1 month - 1 day') THEN NULL
        WHEN (value #>> '{}') ~ '[Tt ][0-9:.]+([Zz]|[+-][0-9:]+)$'
            THEN (value #>> '{}')::timestamptz AT TIME ZONE 'UTC'
        ELSE (value #>> '{}')::timestamp
    END
$$;
