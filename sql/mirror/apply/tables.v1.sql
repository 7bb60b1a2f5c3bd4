-- The mirror's columns, types and tables (SPEC "New objects"). executions gains the link to the
-- region result a mirrored row derives from and the row's evidence level; the mirror keeps its
-- state, anomalies and locks in tables of its own. Undone by tables.down.v1.sql.

ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS mirror_region_result_id uuid;
-- Three levels, 1 to 3.
-- squawk-ignore prefer-bigint-over-smallint
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS mirror_evidence smallint;
COMMENT ON COLUMN public.executions.mirror_region_result_id IS
    'beaconsql: the region_results row this mirrored row derives from; NULL for direct rows';
COMMENT ON COLUMN public.executions.mirror_evidence IS
    'beaconsql: evidence of a mirrored row (3 per-pair result, 2 legacy single answer, 1 expected pair without result); kept when a row is detached';

DO $types$
BEGIN
    IF pg_catalog.to_regtype('public.executions_mirror_action') IS NULL THEN
        -- What applying the rule does, as the plan says it and apply, backfill and verify read it.
        CREATE TYPE public.executions_mirror_action AS ENUM (
            'insert',          -- a stored row of the rule is missing
            'update',          -- a mirrored row differs from the rule's
            'delete',          -- a mirrored row to remove (finding says why)
            'detach',          -- the same, but the transparency log references it: kept as direct
            'leave',           -- the rule yields the pair, a direct row owns its key
            'record_state',    -- record the versions of R and J the rows reflect
            'forget_state',    -- drop the state of a region result that no longer exists
            'record_anomaly'); -- a data problem not yet recorded
    END IF;
    IF pg_catalog.to_regtype('public.executions_mirror_finding') IS NULL THEN
        -- Why a row is inserted, updated or removed: verify's kinds of drift.
        CREATE TYPE public.executions_mirror_finding AS ENUM (
            'missing', 'stale', 'orphaned', 'beside_direct');
    END IF;
END
$types$;

CREATE TABLE IF NOT EXISTS public.region_results_mirror_state (
    region_result_id uuid PRIMARY KEY,
    r_xmin           xid,
    job_fingerprint  text NOT NULL,
    finished         boolean NOT NULL,
    mirrored_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE public.region_results_mirror_state IS
    'beaconsql: per region result, the versions of it (xmin; NULL: not mirrored) and of its job (jobs_mirror_fingerprint) its stored rows reflect, and whether it was finished';

CREATE TABLE IF NOT EXISTS public.region_results_mirror_anomalies (
    region_result_id uuid NOT NULL,
    kind             public.executions_mirror_anomaly NOT NULL,
    detail           text NOT NULL,
    first_seen       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (region_result_id, kind, detail)
);
COMMENT ON TABLE public.region_results_mirror_anomalies IS
    'beaconsql: data problems the mirror met and worked around (the write still committed); reported by beaconsql verify';

CREATE TABLE IF NOT EXISTS public.executions_mirror_locks (
    lock_key text PRIMARY KEY
);
COMMENT ON TABLE public.executions_mirror_locks IS
    'beaconsql: one row per (job_id, region), locked by everything that creates or removes executions rows of its keys (SPEC "Serialisation")';

DO $types$
BEGIN
    IF pg_catalog.to_regtype('public.executions_mirror_change') IS NULL THEN
        -- One change of a plan (region_results_mirror_plan).
        CREATE TYPE public.executions_mirror_change AS (
            action           public.executions_mirror_action,
            finding          public.executions_mirror_finding,
            region_result_id uuid,
            execution_id     integer,
            mirror_row       public.executions_mirror_row,
            r_xmin           xid,
            job_fingerprint  text,
            finished         boolean,
            anomaly_kind     public.executions_mirror_anomaly,
            anomaly_detail   text);
    END IF;
END
$types$;
