-- region_results_mirror_rows(r, job, spec, job_status, only_pairs): THE MIRROR RULE (SPEC "The
-- mirror rule"), the one definition of what a region result yields in executions: one row per
-- pair (stored: evidence 3 or 2, or evidence 1 once r is finished; else a placeholder the view
-- derives), and one row per anomaly (mirror_row NULL). A pure function of r and its job's id,
-- jobspec_data and status (NULL when the jobs row is missing); only_pairs (keys
-- jsonb_build_array(model_id, question_id)::text) restricts the pair rows. Read by the plan,
-- the view, the detach trigger and the benchmarks. What it reads of the job's spec is hashed by
-- jobs_mirror_fingerprint; its status only shapes placeholders, never stored rows.
CREATE OR REPLACE FUNCTION public.region_results_mirror_rows(
    r public.region_results,
    job integer,
    spec jsonb,
    job_status text,
    only_pairs text[] DEFAULT NULL)
RETURNS TABLE (mirror_row public.executions_mirror_row,
               stored boolean,
               anomaly_kind public.executions_mirror_anomaly,
               anomaly_detail text)
LANGUAGE plpgsql STABLE PARALLEL SAFE ROWS 12
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET jit = off
-- anomaly details quote times: the same text in every session
SET DateStyle = 'ISO, YMD'
AS $$
DECLARE
    models text[];
    questions text[];
    unusable jsonb;
    region_status text := public.region_results_mirror_region_status(r.status::text, r.completed_at);
    finished boolean := public.executions_mirror_finished(region_status);
    started_raw timestamp := r.started_at AT TIME ZONE 'UTC';
    completed_raw timestamp := r.completed_at AT TIME ZONE 'UTC';
    started timestamp;
    completed timestamp;
    output jsonb := r.execution_output;
    elements jsonb := output -> 'executions';
    provider text := coalesce(r.provider_id, '')::text;
    region_too_long boolean := length(r.region) > 100 OR length(coalesce(r.provider_id, '')) > 255;
    placeholder text;
    recorded text[] := '{}';
    recorded_set jsonb;
    e record;
    m text;
    q text;
    pair text;
BEGIN
    IF public.executions_mirror_readable(started_raw) THEN
        started := started_raw;
    END IF;
    IF public.executions_mirror_readable(completed_raw) THEN
        completed := completed_raw;
    END IF;
    placeholder := CASE WHEN finished AND region_status = 'cancelled' THEN 'cancelled'
                        WHEN finished THEN 'failed'
                        -- the runner's cancel updates only rows that exist
                        WHEN public.executions_mirror_status(job_status) = 'cancelled' THEN 'cancelled'
                        ELSE region_status END;

    -- models(J) and questions(J), and their unusable entries.
    SELECT array_agg(x.model_id ORDER BY x.seq) FILTER (WHERE x.model_id IS NOT NULL),
           jsonb_agg(jsonb_build_array('malformed_models', format(
               'jobspec_data.metadata.models[%s] is not a usable model id: %s',
               x.entry_index, left(x.entry::text, 100)))) FILTER (WHERE x.model_id IS NULL)
    INTO models, unusable
    FROM public.jobs_mirror_models(spec, r.model_id::text) x;
    SELECT array_agg(x.question_id ORDER BY x.seq) FILTER (WHERE x.question_id IS NOT NULL),
           coalesce(unusable, '[]'::jsonb) || coalesce(jsonb_agg(jsonb_build_array(
               'malformed_questions', format(
               'jobspec_data.questions[%s] is not a usable question id: %s',
               x.entry_index, left(x.entry::text, 100)))) FILTER (WHERE x.question_id IS NULL),
               '[]'::jsonb)
    INTO questions, unusable
    FROM public.jobs_mirror_questions(spec) x;

    -- Anomalies about the job, its spec and the region result as a whole (SPEC "Never fail
    -- the writer over data").
    mirror_row := NULL;
    stored := NULL;
    FOR anomaly_kind, anomaly_detail IN
        SELECT v.kind, left(v.detail, 300) FROM (VALUES
            ('missing_job'::public.executions_mirror_anomaly, CASE WHEN job IS NULL THEN
                'no jobs row has this run''s jobspec_id; models and questions fell back to defaults' END),
            ('malformed_models', CASE WHEN jsonb_typeof(spec #> '{metadata,models}') NOT IN ('array', 'null') THEN
                format('jobspec_data.metadata.models is %s, not an array', jsonb_typeof(spec #> '{metadata,models}')) END),
            ('malformed_questions', CASE WHEN jsonb_typeof(spec -> 'questions') NOT IN ('array', 'null') THEN
                format('jobspec_data.questions is %s, not an array', jsonb_typeof(spec -> 'questions')) END),
            ('unknown_status', CASE WHEN public.executions_mirror_status(r.status::text) IS NULL THEN
                format('region status %s is not a known status; mapped to %s',
                       quote_literal(left(r.status, 100)), region_status) END),
            ('malformed_executions', CASE WHEN jsonb_typeof(elements) NOT IN ('array', 'null') THEN
                format('execution_output.executions is %s, not an array', jsonb_typeof(elements)) END),
            ('unreadable_time', CASE WHEN started IS NULL THEN
                format('region started_at %s UTC is outside what clients can read; shown as null',
                       started_raw) END),
            ('unreadable_time', CASE WHEN completed IS NULL AND r.completed_at IS NOT NULL THEN
                format('region completed_at %s UTC is outside what clients can read; shown as null',
                       completed_raw) END)
        ) v(kind, detail)
        WHERE v.detail IS NOT NULL
        UNION ALL
        SELECT (u ->> 0)::public.executions_mirror_anomaly, left(u ->> 1, 300)
        FROM jsonb_array_elements(unusable) u
    LOOP
        RETURN NEXT;
    END LOOP;

    -- Per-pair results: the winning element of each pair (evidence 3).
    IF jsonb_typeof(elements) = 'array' THEN
        FOR e IN
            SELECT el.ordinality, el.element, el.model_id, el.question_id, el.usable, x.*
            FROM public.region_results_mirror_elements(elements) el
            LEFT JOIN LATERAL public.region_results_mirror_element_row(
                          region_status, started_raw, completed_raw, el.element) x ON el.usable
            WHERE el.wins OR NOT el.usable
        LOOP
            IF NOT e.usable THEN
                IF only_pairs IS NULL THEN
                    anomaly_kind := 'invalid_element';
                    anomaly_detail := format('execution_output.executions[%s] is skipped: %s',
                        e.ordinality - 1,
                        CASE WHEN jsonb_typeof(e.element) <> 'object' THEN 'not an object'
                             ELSE 'model_id and question_id must be non-empty strings' END);
                    RETURN NEXT;
                END IF;
                CONTINUE;
            END IF;
            pair := jsonb_build_array(e.model_id, e.question_id)::text;
            recorded := recorded || pair;
            IF only_pairs IS NOT NULL AND NOT pair = ANY (only_pairs) THEN
                CONTINUE;
            END IF;
            -- its anomalies (checked one by one: most elements have none)
            IF e.status_unknown THEN
                anomaly_kind := 'unknown_status';
                anomaly_detail := format('element (%s, %s) status %s is not a known status; mapped to %s',
                    e.model_id, e.question_id, quote_literal(left(e.element ->> 'status', 100)),
                    e.element_status);
                RETURN NEXT;
            END IF;
            IF e.unfinished THEN
                anomaly_kind := 'unfinished_element';
                anomaly_detail := format('element (%s, %s) is %s but the region is finished; recorded as failed',
                    e.model_id, e.question_id, e.element_status);
                RETURN NEXT;
            END IF;
            IF e.invalid_started_at OR e.unreadable_started_at THEN
                anomaly_kind := CASE WHEN e.invalid_started_at THEN 'invalid_time' ELSE 'unreadable_time' END;
                anomaly_detail := format('element (%s, %s) started_at %s %s; the region''s time is used',
                    e.model_id, e.question_id, left((e.element -> 'started_at')::text, 60),
                    CASE WHEN e.invalid_started_at THEN 'is not an ISO 8601 time'
                         ELSE 'is outside what clients can read' END);
                RETURN NEXT;
            END IF;
            IF e.invalid_completed_at OR e.unreadable_completed_at THEN
                anomaly_kind := CASE WHEN e.invalid_completed_at THEN 'invalid_time' ELSE 'unreadable_time' END;
                anomaly_detail := format('element (%s, %s) completed_at %s %s; the region''s time is used',
                    e.model_id, e.question_id, left((e.element -> 'completed_at')::text, 60),
                    CASE WHEN e.invalid_completed_at THEN 'is not an ISO 8601 time'
                         ELSE 'is outside what clients can read' END);
                RETURN NEXT;
            END IF;
            IF region_too_long OR length(e.model_id) > 50 OR length(e.question_id) > 255 THEN
                anomaly_kind := 'id_too_long';
                anomaly_detail := public.region_results_mirror_too_long(e.model_id, e.question_id);
                RETURN NEXT;
                CONTINUE;
            END IF;
            anomaly_kind := NULL;
            anomaly_detail := NULL;
            mirror_row := ROW(job, r.cross_region_execution_id, r.region, provider, e.model_id,
                              e.question_id, e.status, e.started_at, e.completed_at, e.started_at,
                              e.output_data, e.receipt_data, e.original_error, r.id, 3
                          )::public.executions_mirror_row;
            stored := true;
            RETURN NEXT;
            mirror_row := NULL;
            stored := NULL;
        END LOOP;
    ELSIF jsonb_typeof(output -> 'data') <> 'null' THEN
        -- The runner's own format: one answer in data, attributed to exactly one pair
        -- (evidence 2).
        m := CASE WHEN (output #>> '{data,metadata,model}') = ANY (models)
                  THEN output #>> '{data,metadata,model}' ELSE models[1] END;
        q := questions[1];
        pair := jsonb_build_array(m, q)::text;
        recorded := ARRAY[pair];
        IF only_pairs IS NULL OR pair = ANY (only_pairs) THEN
            IF region_too_long OR length(m) > 50 OR length(q) > 255 THEN
                anomaly_kind := 'id_too_long';
                anomaly_detail := public.region_results_mirror_too_long(m, q);
                RETURN NEXT;
            ELSE
                anomaly_kind := NULL;
                anomaly_detail := NULL;
                mirror_row := ROW(job, r.cross_region_execution_id, r.region, provider, m, q,
                                  'completed', started, completed, started, output -> 'data',
                                  NULL, NULL, r.id, 2)::public.executions_mirror_row;
                stored := true;
                RETURN NEXT;
                mirror_row := NULL;
                stored := NULL;
            END IF;
        END IF;
    END IF;

    -- Every expected pair without a result (evidence 1): stored once r is finished, else a
    -- placeholder.
    IF cardinality(recorded) > 100 THEN
        SELECT jsonb_object_agg(k, true) INTO recorded_set FROM unnest(recorded) k;
    END IF;
    FOREACH m IN ARRAY models LOOP
        FOREACH q IN ARRAY questions LOOP
            pair := jsonb_build_array(m, q)::text;
            IF (recorded_set IS NULL AND pair = ANY (recorded)) OR recorded_set ? pair
               OR (only_pairs IS NOT NULL AND NOT pair = ANY (only_pairs)) THEN
                CONTINUE;
            END IF;
            IF region_too_long OR length(m) > 50 OR length(q) > 255 THEN
                anomaly_kind := 'id_too_long';
                anomaly_detail := public.region_results_mirror_too_long(m, q);
                mirror_row := NULL;
                stored := NULL;
                RETURN NEXT;
                CONTINUE;
            END IF;
            anomaly_kind := NULL;
            anomaly_detail := NULL;
            mirror_row := ROW(job, r.cross_region_execution_id, r.region, provider, m, q,
                              placeholder, started, CASE WHEN finished THEN completed END, started,
                              NULL, NULL,
                              CASE WHEN finished THEN coalesce(nullif(r.error_message, ''),
                                                               'no result recorded') END,
                              r.id, 1)::public.executions_mirror_row;
            stored := finished;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;

-- region_results_mirror_too_long(model_id, question_id): the anomaly detail of a pair whose ids
-- (or whose region result's region or provider) are longer than the runner's columns.
CREATE OR REPLACE FUNCTION public.region_results_mirror_too_long(model_id text, question_id text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.format('pair (%s, %s) not mirrored: model_id over 50, question_id over 255, '
                             'region over 100 or provider_id over 255 characters',
                             pg_catalog.left(model_id, 60), pg_catalog.left(question_id, 60))
$$;

-- region_results_mirror_stores_nothing(r): whether the rule stores no row for region result r
-- whatever its job: unfinished, no per-pair element and no legacy answer (a region the runner
-- or the writer just started). Lets the INSERT trigger skip deriving the placeholders.
CREATE OR REPLACE FUNCTION public.region_results_mirror_stores_nothing(r public.region_results)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT NOT public.executions_mirror_finished(
               public.region_results_mirror_region_status(r.status::text, r.completed_at))
           AND CASE pg_catalog.jsonb_typeof(r.execution_output OPERATOR(pg_catalog.->) 'executions')
                   WHEN 'array' THEN pg_catalog.jsonb_array_length(
                       r.execution_output OPERATOR(pg_catalog.->) 'executions') OPERATOR(pg_catalog.=) 0
                   ELSE coalesce(pg_catalog.jsonb_typeof(
                       r.execution_output OPERATOR(pg_catalog.->) 'data'), 'null')
                        OPERATOR(pg_catalog.=) 'null'
               END
$$;
