-- Mirror (revision 0002), tables and columns. Read by migrations/versions/0002_mirror.py.
-- executions gains the link to the region result a mirrored row was derived from and the
-- row's evidence level (SPEC "Schema", "New objects"); the mirror state and the anomalies get
-- tables of their own. No foreign key on the link: a region result deleted while triggers
-- were skipped must leave its rows behind for verify to find, and the mirror, not a cascade,
-- decides between deleting and detaching.

ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS mirror_region_result_id uuid;
-- Three levels, 1 to 3.
-- squawk-ignore prefer-bigint-over-smallint
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS mirror_evidence smallint;
COMMENT ON COLUMN public.executions.mirror_region_result_id IS
    'beaconsql: the region_results row this mirrored row was derived from; NULL for direct rows';
COMMENT ON COLUMN public.executions.mirror_evidence IS
    'beaconsql: evidence level of a mirrored row (3 per-pair result, 2 legacy single answer, 1 expected pair without result); kept when a row is detached';

CREATE TABLE IF NOT EXISTS public.region_results_mirror_state (
    region_result_id uuid PRIMARY KEY,
    r_xmin           xid,
    job_fingerprint  text NOT NULL,
    mirrored_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE public.region_results_mirror_state IS
    'beaconsql: per region result, the version of it (xmin) and of its job (jobs_mirror_fingerprint) that its mirrored rows reflect; r_xmin NULL marks it stale';

CREATE TABLE IF NOT EXISTS public.region_results_mirror_anomalies (
    region_result_id uuid NOT NULL,
    kind             text NOT NULL,
    detail           text NOT NULL,
    first_seen       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (region_result_id, kind, detail)
);
COMMENT ON TABLE public.region_results_mirror_anomalies IS
    'beaconsql: data problems the mirror met and worked around (the write still committed); reported by beaconsql verify';
