-- executions_mirror_time(value): an element's time (an ISO 8601 / RFC 3339 JSON string) as
-- naive UTC, the way executions stores times; a time without a zone is UTC. NULL when absent,
-- not a string or not a valid time (validated before any cast: PostgreSQL 15 has no
-- pg_input_is_valid). executions_mirror_readable(value): whether a naive UTC time is one
-- clients can hold: finite, within 0001-01-01 .. 9999-12-31 (SPEC "Values a client cannot
-- read"). Read by the rule; inlined (no SET search_path), every call schema-qualified.
CREATE OR REPLACE FUNCTION public.executions_mirror_time(value jsonb)
RETURNS timestamp
LANGUAGE sql STABLE PARALLEL SAFE
-- STABLE: the text-to-timestamptz cast is; with a zone in the text its result does not depend
-- on the session.
AS $$
    SELECT CASE
        WHEN pg_catalog.jsonb_typeof(value) IS DISTINCT FROM 'string' THEN NULL
        WHEN (value OPERATOR(pg_catalog.#>>) '{}') OPERATOR(pg_catalog.!~)
             ('^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])'
              '([Tt ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?'
              '(Z|z|[+-](0[0-9]|1[0-5])(:?[0-5][0-9])?)?)?$') THEN NULL
        WHEN pg_catalog.substr(value OPERATOR(pg_catalog.#>>) '{}', 1, 4)::integer
             OPERATOR(pg_catalog.<) 1 THEN NULL
        WHEN pg_catalog.substr(value OPERATOR(pg_catalog.#>>) '{}', 9, 2)::integer
             OPERATOR(pg_catalog.>) pg_catalog.date_part('day',
                 pg_catalog.make_date(pg_catalog.substr(value OPERATOR(pg_catalog.#>>) '{}', 1, 4)::integer,
                                      pg_catalog.substr(value OPERATOR(pg_catalog.#>>) '{}', 6, 2)::integer, 1)
                 OPERATOR(pg_catalog.+) '1 month - 1 day'::interval) THEN NULL
        WHEN (value OPERATOR(pg_catalog.#>>) '{}') OPERATOR(pg_catalog.~) '[Tt ][0-9:.]+([Zz]|[+-][0-9:]+)$'
            THEN pg_catalog.timezone('UTC', (value OPERATOR(pg_catalog.#>>) '{}')::timestamptz)
        ELSE (value OPERATOR(pg_catalog.#>>) '{}')::timestamp
    END
$$;

CREATE OR REPLACE FUNCTION public.executions_mirror_readable(value timestamp)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT value OPERATOR(pg_catalog.>=) '0001-01-01 00:00:00'::timestamp
           AND value OPERATOR(pg_catalog.<) '10000-01-01 00:00:00'::timestamp
$$;
