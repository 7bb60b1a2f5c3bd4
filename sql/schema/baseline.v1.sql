-- Baseline schema (revision 0001), transactional part. Read by migrations/versions/0001_baseline.py.
--
-- On an empty database it creates the runner's final schema for every table beaconsql reads,
-- writes or is constrained by (jobs, executions, cross_region_executions, region_results,
-- cross_region_analyses, transparency_log), as the runner's migrations define them
-- (shared/reference/runner-app.md sections 1.2-1.5). On a database the runner built it adopts
-- what is there: it checks the columns beaconsql needs, adds what a runner database may lack,
-- and leaves every other object and every row alone. Each statement is idempotent, and what
-- it creates (as opposed to finds) is recorded in beaconsql_baseline_objects, which the
-- downgrade (baseline_downgrade.v1.sql) reads, online or offline alike.
-- The runner's indexes are built afterwards, CONCURRENTLY (runner_indexes.v1.sql).

CREATE TABLE IF NOT EXISTS public.beaconsql_baseline_objects (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    object_type text NOT NULL,
    object_name text NOT NULL,
    table_name  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (object_type, object_name)
);

COMMENT ON TABLE public.beaconsql_baseline_objects IS
    'What beaconsql''s baseline revision created (not adopted); its downgrade drops exactly these.';

-- 1. Refuse, before changing anything, a database whose existing columns beaconsql cannot use.
DO $check$
DECLARE
    problems text[] := '{}';
    req record;
BEGIN
    FOR req IN
        SELECT r.tbl, r.col, r.want, r.addable, a.attnum,
               format_type(a.atttypid, a.atttypmod) AS actual
        FROM (VALUES
            ('jobs', 'id', 'integer', false),
            ('jobs', 'jobspec_id', 'character varying(255)', false),
            ('jobs', 'jobspec_data', 'jsonb', false),
            ('jobs', 'status', 'character varying(50)', false),
            ('jobs', 'created_at', 'timestamp without time zone', false),
            ('jobs', 'updated_at', 'timestamp without time zone', false),
            ('executions', 'id', 'integer', false),
            ('executions', 'job_id', 'integer', false),
            ('executions', 'provider_id', 'character varying(255)', false),
            ('executions', 'region', 'character varying(100)', false),
            ('executions', 'status', 'character varying(50)', false),
            ('executions', 'started_at', 'timestamp without time zone', false),
            ('executions', 'completed_at', 'timestamp without time zone', false),
            ('executions', 'output_data', 'jsonb', false),
            ('executions', 'receipt_data', 'jsonb', false),
            ('executions', 'created_at', 'timestamp without time zone', false),
            ('executions', 'cross_region_execution_id', 'uuid', true),
            ('executions', 'model_id', 'character varying(50)', true),
            ('executions', 'is_substantive', 'boolean', true),
            ('executions', 'is_content_refusal', 'boolean', true),
            ('executions', 'is_technical_error', 'boolean', true),
            ('executions', 'response_classification', 'character varying(50)', true),
            ('executions', 'response_length', 'integer', true),
            ('executions', 'system_prompt', 'text', true),
            ('executions', 'question_id', 'character varying(255)', true),
            ('executions', 'retry_count', 'integer', true),
            ('executions', 'max_retries', 'integer', true),
            ('executions', 'last_retry_at', 'timestamp with time zone', true),
            ('executions', 'retry_history', 'jsonb', true),
            ('executions', 'original_error', 'text', true),
            ('cross_region_executions', 'id', 'uuid', false),
            ('cross_region_executions', 'jobspec_id', 'character varying(255)', false),
            ('cross_region_executions', 'total_regions', 'integer', false),
            ('cross_region_executions', 'success_count', 'integer', false),
            ('cross_region_executions', 'failure_count', 'integer', false),
            ('cross_region_executions', 'min_regions_required', 'integer', false),
            ('cross_region_executions', 'min_success_rate', 'numeric(3,2)', false),
            ('cross_region_executions', 'status', 'character varying(50)', false),
            ('cross_region_executions', 'started_at', 'timestamp with time zone', false),
            ('cross_region_executions', 'completed_at', 'timestamp with time zone', false),
            ('cross_region_executions', 'duration_ms', 'bigint', false),
            ('region_results', 'id', 'uuid', false),
            ('region_results', 'cross_region_execution_id', 'uuid', false),
            ('region_results', 'region', 'character varying(100)', false),
            ('region_results', 'provider_id', 'character varying(255)', false),
            ('region_results', 'status', 'character varying(50)', false),
            ('region_results', 'started_at', 'timestamp with time zone', false),
            ('region_results', 'completed_at', 'timestamp with time zone', false),
            ('region_results', 'duration_ms', 'bigint', false),
            ('region_results', 'execution_output', 'jsonb', false),
            ('region_results', 'error_message', 'text', false),
            ('region_results', 'metadata', 'jsonb', false),
            ('region_results', 'updated_at', 'timestamp with time zone', false),
            ('region_results', 'model_id', 'character varying(50)', true),
            ('cross_region_analyses', 'cross_region_execution_id', 'uuid', false),
            ('cross_region_analyses', 'summary_source', 'text', true),
            ('transparency_log', 'execution_id', 'integer', false)
        ) AS r(tbl, col, want, addable)
        LEFT JOIN pg_catalog.pg_attribute a
               ON a.attrelid = to_regclass('public.' || r.tbl)
              AND a.attname = r.col AND a.attnum > 0 AND NOT a.attisdropped
        WHERE to_regclass('public.' || r.tbl) IS NOT NULL
    LOOP
        IF req.attnum IS NULL THEN
            IF NOT req.addable THEN
                problems := problems || format('%s.%s is missing (expected %s)', req.tbl, req.col, req.want);
            END IF;
        ELSIF req.actual IS DISTINCT FROM req.want
          -- A wider text column holds what the runner writes; so does a bigint id.
          AND NOT (req.want LIKE 'character varying(%'
                   AND (req.actual IN ('text', 'character varying')
                        OR (req.actual LIKE 'character varying(%'
                            AND substring(req.actual FROM '\d+')::int >= substring(req.want FROM '\d+')::int)))
          AND NOT (req.want = 'text' AND req.actual LIKE 'character varying%')
          AND NOT (req.want = 'integer' AND req.actual = 'bigint')
        THEN
            problems := problems || format('%s.%s is %s (expected %s)', req.tbl, req.col, req.actual, req.want);
        END IF;
    END LOOP;
    IF cardinality(problems) > 0 THEN
        RAISE EXCEPTION 'beaconsql cannot adopt this database: %', array_to_string(problems, '; ')
            USING HINT = 'These columns differ from the runner''s schema (runner-app.md section 1.3); '
                         'alter them to the expected types, or point beaconsql at another database.';
    END IF;
END
$check$;

-- 2. Tables, in the order the runner's migrations create them, so that column positions match.
DO $tables$
BEGIN
    IF to_regclass('public.jobs') IS NULL THEN
        CREATE TABLE public.jobs (
            id           serial PRIMARY KEY,
            jobspec_id   varchar(255) UNIQUE NOT NULL,
            jobspec_data jsonb NOT NULL,
            status       varchar(50) DEFAULT 'queued',
            created_at   timestamp DEFAULT now(),
            updated_at   timestamp DEFAULT now(),
            CONSTRAINT chk_jobs_status
                CHECK (status IN ('created', 'queued', 'running', 'completed', 'failed', 'cancelled'))
        );
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name) VALUES ('table', 'jobs');
    END IF;

    IF to_regclass('public.executions') IS NULL THEN
        CREATE TABLE public.executions (
            id           serial PRIMARY KEY,
            job_id       integer REFERENCES public.jobs (id),
            provider_id  varchar(255) NOT NULL,
            region       varchar(100) NOT NULL,
            status       varchar(50) DEFAULT 'pending',
            started_at   timestamp,
            completed_at timestamp,
            output_data  jsonb,
            receipt_data jsonb,
            created_at   timestamp DEFAULT now()
        );
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name) VALUES ('table', 'executions');
    END IF;
END
$tables$;

ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS ipfs_cid varchar(100);
-- The runner's own definition (0002), which beaconsql must match.
-- squawk-ignore prefer-timestamp-tz
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS ipfs_pinned_at timestamp;

DO $transparency_log$
BEGIN
    IF to_regclass('public.transparency_log') IS NULL THEN
        CREATE TABLE public.transparency_log (
            id                  serial PRIMARY KEY,
            log_index           bigint NOT NULL UNIQUE,
            execution_id        integer NOT NULL,
            job_id              varchar(100) NOT NULL,
            region              varchar(50) NOT NULL,
            provider_id         varchar(100) NOT NULL,
            status              varchar(20) NOT NULL,
            started_at          timestamp,
            completed_at        timestamp,
            output_hash         varchar(64),
            receipt_hash        varchar(64),
            ipfs_cid            varchar(100),
            merkle_leaf_hash    varchar(64) NOT NULL,
            merkle_tree_root    varchar(64),
            merkle_proof        jsonb,
            logged_at           timestamp DEFAULT CURRENT_TIMESTAMP NOT NULL,
            anchor_tx_hash      varchar(66),
            anchor_block_number bigint,
            anchor_timestamp    timestamp,
            previous_log_hash   varchar(64),
            signature           varchar(128),
            FOREIGN KEY (execution_id) REFERENCES public.executions (id) ON DELETE RESTRICT
        );
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name) VALUES ('table', 'transparency_log');
    END IF;

    IF to_regclass('public.transparency_log_index_seq') IS NULL THEN
        CREATE SEQUENCE public.transparency_log_index_seq START 1;
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name) VALUES ('sequence', 'transparency_log_index_seq');
    END IF;

    IF to_regprocedure('public.set_transparency_log_fields()') IS NULL THEN
        -- Numbers each entry from the sequence and chains it to the previous one; the leaf
        -- hash is a placeholder the application replaces (runner-app.md section 1.2, 0003).
        CREATE FUNCTION public.set_transparency_log_fields() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        DECLARE
            prev_hash varchar(64);
        BEGIN
            NEW.log_index = nextval('transparency_log_index_seq');
            SELECT merkle_leaf_hash INTO prev_hash
            FROM transparency_log
            WHERE log_index = NEW.log_index - 1;
            NEW.previous_log_hash = COALESCE(prev_hash, repeat('0', 64));
            NEW.merkle_leaf_hash = 'PLACEHOLDER_' || NEW.log_index;
            RETURN NEW;
        END;
        $fn$;
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name) VALUES ('function', 'set_transparency_log_fields()');
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                   WHERE tgrelid = 'public.transparency_log'::regclass
                     AND tgname = 'trigger_set_transparency_log_fields') THEN
        CREATE TRIGGER trigger_set_transparency_log_fields
            BEFORE INSERT ON public.transparency_log
            FOR EACH ROW EXECUTE FUNCTION public.set_transparency_log_fields();
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name, table_name)
        VALUES ('trigger', 'trigger_set_transparency_log_fields', 'transparency_log');
    END IF;

    IF to_regclass('public.public_transparency_log') IS NULL THEN
        CREATE VIEW public.public_transparency_log AS
        SELECT log_index, job_id, region, provider_id, status, started_at, completed_at,
               output_hash, receipt_hash, ipfs_cid, merkle_leaf_hash, merkle_tree_root,
               logged_at, anchor_tx_hash, anchor_block_number, anchor_timestamp
        FROM public.transparency_log
        ORDER BY log_index;
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name) VALUES ('view', 'public_transparency_log');
    END IF;
END
$transparency_log$;

DO $cross_region$
BEGIN
    IF to_regclass('public.cross_region_executions') IS NULL THEN
        CREATE TABLE public.cross_region_executions (
            id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            jobspec_id           varchar(255) NOT NULL,
            total_regions        integer NOT NULL,
            success_count        integer NOT NULL DEFAULT 0,
            failure_count        integer NOT NULL DEFAULT 0,
            min_regions_required integer NOT NULL DEFAULT 3,
            min_success_rate     decimal(3,2) NOT NULL DEFAULT 0.67,
            status               varchar(50) NOT NULL DEFAULT 'running',
            started_at           timestamptz NOT NULL DEFAULT now(),
            completed_at         timestamptz,
            duration_ms          bigint,
            created_at           timestamptz NOT NULL DEFAULT now(),
            updated_at           timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name) VALUES ('table', 'cross_region_executions');
    END IF;

    IF to_regclass('public.region_results') IS NULL THEN
        CREATE TABLE public.region_results (
            id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            cross_region_execution_id uuid NOT NULL
                REFERENCES public.cross_region_executions (id) ON DELETE CASCADE,
            region                    varchar(100) NOT NULL,
            provider_id               varchar(255),
            provider_info             jsonb,
            status                    varchar(50) NOT NULL,
            started_at                timestamptz NOT NULL,
            completed_at              timestamptz,
            duration_ms               bigint,
            execution_output          jsonb,
            error_message             text,
            scoring                   jsonb,
            metadata                  jsonb,
            created_at                timestamptz NOT NULL DEFAULT now(),
            updated_at                timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name) VALUES ('table', 'region_results');
    END IF;

    IF to_regclass('public.cross_region_analyses') IS NULL THEN
        CREATE TABLE public.cross_region_analyses (
            id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            cross_region_execution_id uuid NOT NULL
                REFERENCES public.cross_region_executions (id) ON DELETE CASCADE,
            bias_variance             decimal(5,4),
            censorship_rate           decimal(3,2),
            factual_consistency       decimal(3,2),
            narrative_divergence      decimal(3,2),
            key_differences           jsonb,
            risk_assessment           jsonb,
            summary                   text,
            recommendation            text,
            created_at                timestamptz NOT NULL DEFAULT now(),
            updated_at                timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name) VALUES ('table', 'cross_region_analyses');
    END IF;

    IF to_regprocedure('public.update_updated_at_column()') IS NULL THEN
        CREATE FUNCTION public.update_updated_at_column() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        BEGIN
            NEW.updated_at = NOW();
            RETURN NEW;
        END;
        $fn$;
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name) VALUES ('function', 'update_updated_at_column()');
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                   WHERE tgrelid = 'public.cross_region_executions'::regclass
                     AND tgname = 'update_cross_region_executions_updated_at') THEN
        CREATE TRIGGER update_cross_region_executions_updated_at
            BEFORE UPDATE ON public.cross_region_executions
            FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name, table_name)
        VALUES ('trigger', 'update_cross_region_executions_updated_at', 'cross_region_executions');
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                   WHERE tgrelid = 'public.region_results'::regclass
                     AND tgname = 'update_region_results_updated_at') THEN
        CREATE TRIGGER update_region_results_updated_at
            BEFORE UPDATE ON public.region_results
            FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name, table_name)
        VALUES ('trigger', 'update_region_results_updated_at', 'region_results');
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                   WHERE tgrelid = 'public.cross_region_analyses'::regclass
                     AND tgname = 'update_cross_region_analyses_updated_at') THEN
        CREATE TRIGGER update_cross_region_analyses_updated_at
            BEFORE UPDATE ON public.cross_region_analyses
            FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();
        INSERT INTO public.beaconsql_baseline_objects (object_type, object_name, table_name)
        VALUES ('trigger', 'update_cross_region_analyses_updated_at', 'cross_region_analyses');
    END IF;
END
$cross_region$;

-- 3. Columns later migrations add, in production order (their definitions are the runner's, which
-- beaconsql must match: squawk's preferences for bigint and text are ignored for them) (0007, 0008, 0009, the hand-run 007_,
-- 0010). A runner database may lack some of them (question_id when 007_ was never run; most of
-- them when the inline fallback built it). Added columns are adopted: never dropped again.
-- The column is adopted (kept on downgrade), but its foreign key would keep the baseline's own
-- cross_region_executions from being dropped: the key is recorded as created.
INSERT INTO public.beaconsql_baseline_objects (object_type, object_name, table_name)
SELECT 'constraint', 'executions_cross_region_execution_id_fkey', 'executions'
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                  WHERE attrelid = 'public.executions'::regclass
                    AND attname = 'cross_region_execution_id' AND NOT attisdropped)
ON CONFLICT DO NOTHING;
-- The runner's own definition (0007). Where the column is missing it is new and all NULL, so
-- the validation scan is short and the lock is bounded by lock_timeout.
-- (squawk reads an ignore as applying to the next line: the statement stays on one.)
-- squawk-ignore adding-foreign-key-constraint
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS cross_region_execution_id uuid REFERENCES public.cross_region_executions (id);
ALTER TABLE public.region_results ADD COLUMN IF NOT EXISTS model_id varchar(50) DEFAULT 'llama3.2-1b';
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS model_id varchar(50) DEFAULT 'llama3.2-1b';
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS is_substantive boolean DEFAULT false;
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS is_content_refusal boolean DEFAULT false;
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS is_technical_error boolean DEFAULT false;
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS response_classification varchar(50) DEFAULT 'unknown';
-- squawk-ignore prefer-bigint-over-int
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS response_length integer DEFAULT 0;
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS system_prompt text;
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS question_id varchar(255);
-- squawk-ignore prefer-bigint-over-int
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS retry_count integer NOT NULL DEFAULT 0;
-- squawk-ignore prefer-bigint-over-int
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS max_retries integer NOT NULL DEFAULT 3;
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS last_retry_at timestamptz;
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS retry_history jsonb DEFAULT '[]'::jsonb;
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS original_error text;
-- Go code writes it, no runner migration creates it (runner-app.md section 1.5).
ALTER TABLE public.cross_region_analyses ADD COLUMN IF NOT EXISTS summary_source text;

-- 4. chk_executions_status. A database built by the runner's inline fallback has rows the
-- CHECK would reject (e.g. the retry handler's 'retrying'), so it is added NOT VALID there:
-- existing rows are kept as they are and reported; new writes are checked.
DO $status_check$
DECLARE
    created boolean;
    violating bigint;
    sample text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
               WHERE conrelid = 'public.executions'::regclass AND conname = 'chk_executions_status') THEN
        RETURN;
    END IF;
    created := EXISTS (SELECT 1 FROM public.beaconsql_baseline_objects
                       WHERE object_type = 'table' AND object_name = 'executions');
    IF created THEN
        ALTER TABLE public.executions ADD CONSTRAINT chk_executions_status
            CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled'));
    ELSE
        -- Count before taking the ACCESS EXCLUSIVE lock of ADD CONSTRAINT.
        SELECT count(*), string_agg(id || ':' || coalesce(status, 'NULL'), ', ' ORDER BY id)
                             FILTER (WHERE rn <= 20)
        INTO violating, sample
        FROM (SELECT id, status, row_number() OVER (ORDER BY id) AS rn
              FROM public.executions
              WHERE status NOT IN ('pending', 'running', 'completed', 'failed', 'cancelled')) bad;
        ALTER TABLE public.executions ADD CONSTRAINT chk_executions_status
            CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')) NOT VALID;
        IF violating > 0 THEN
            RAISE WARNING 'chk_executions_status added NOT VALID: % executions rows violate it (id:status %)',
                violating, sample
                USING HINT = 'They are kept as they are. Fix their status, then run '
                             'ALTER TABLE executions VALIDATE CONSTRAINT chk_executions_status.';
        ELSE
            RAISE NOTICE 'chk_executions_status added NOT VALID; no existing row violates it'
                USING HINT = 'Run ALTER TABLE executions VALIDATE CONSTRAINT chk_executions_status off-peak.';
        END IF;
    END IF;
    INSERT INTO public.beaconsql_baseline_objects (object_type, object_name, table_name)
    VALUES ('constraint', 'chk_executions_status', 'executions');
END
$status_check$;
