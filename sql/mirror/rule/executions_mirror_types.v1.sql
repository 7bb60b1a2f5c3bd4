-- The mirror's types. executions_mirror_row: the columns of executions the mirror owns, the one
-- definition of that list (SPEC "Columns the mirror owns"); executions_mirror_anomaly: the kinds
-- of data problems the rule works around. Read by the rule, apply, triggers, verify and status.
DO $types$
BEGIN
    IF pg_catalog.to_regtype('public.executions_mirror_row') IS NULL THEN
        CREATE TYPE public.executions_mirror_row AS (
            job_id integer,
            cross_region_execution_id uuid,
            region text,
            provider_id text,
            model_id text,
            question_id text,
            status text,
            started_at timestamp,
            completed_at timestamp,
            created_at timestamp,
            output_data jsonb,
            receipt_data jsonb,
            original_error text,
            mirror_region_result_id uuid,
            mirror_evidence smallint);
    END IF;
    IF pg_catalog.to_regtype('public.executions_mirror_anomaly') IS NULL THEN
        CREATE TYPE public.executions_mirror_anomaly AS ENUM (
            'missing_job',              -- no jobs row has the run's jobspec_id
            'malformed_models',         -- jobspec_data.metadata.models, or an entry, unusable
            'malformed_questions',      -- jobspec_data.questions, or an entry, unusable
            'malformed_executions',     -- execution_output.executions is not an array
            'invalid_element',          -- an element without usable model_id and question_id
            'unknown_status',           -- a status word outside the vocabulary
            'unfinished_element',       -- pending or running in a finished region
            'invalid_time',             -- an element time that is not ISO 8601
            'unreadable_time',          -- a time clients cannot hold (infinite, year 10000...)
            'id_too_long',              -- an id longer than the runner's column
            'transparency_log_reference');  -- a row to remove that the log references: detached
    END IF;
END
$types$;
