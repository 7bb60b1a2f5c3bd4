-- executions_mirror_lock_pause(waiting_since, attempt): the wait between two attempts of the
-- mirror to write executions rows another transaction holds (it rolls an attempt back rather
-- than wait holding its locks; see region_results_mirror_apply). Sleeps a few milliseconds,
-- longer as attempts add up; raises lock_not_available once the session's lock_timeout (if
-- any) has passed since waiting_since, as an ordinary lock wait would. Read by
-- region_results_mirror_apply.
CREATE OR REPLACE FUNCTION public.executions_mirror_lock_pause(waiting_since timestamptz,
                                                               attempt integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    timeout interval := current_setting('lock_timeout')::interval;
BEGIN
    IF timeout > interval '0' AND clock_timestamp() - waiting_since > timeout THEN
        RAISE EXCEPTION 'canceling statement due to lock timeout'
            USING ERRCODE = 'lock_not_available',
                  DETAIL = 'beaconsql''s mirror waited for executions rows another transaction holds.';
    END IF;
    PERFORM pg_sleep(0.001 * least(attempt, 20));
END
$$;
