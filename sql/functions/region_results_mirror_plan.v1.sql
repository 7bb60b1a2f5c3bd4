-- region_results_mirror_plan(region_result_ids, only_pairs, scope): what materialising the
-- mirror rule for these region results would change in executions (SPEC "Materialising the
-- rule into executions"), computed and not applied. The one definition of the difference
-- between the rule's rows and the materialised ones: region_results_mirror_apply executes it
-- (triggers, backfill) and `beaconsql verify` reports it.
--
-- One row per change, action being:
--   insert | update            a row the rule yields is missing | stale (a mirror-owned column differs)
--   delete | detach            a mirrored row to remove (reason says why); detach when the
--                              transparency log references it (it then becomes a direct row)
--   left_to_direct             the rule yields the pair but a direct row owns its key
--   state | forget             record the versions of R and J the rows now reflect | drop the
--                              record of a region result that no longer exists
--   anomaly                    a problem with the data, not yet recorded
-- Ids of region results that no longer exist are accepted: their mirrored rows and state go.
--
-- scope: 'region' (default) re-derives each region result whole and records its state;
-- 'changed_pairs' (the trigger, after a per-pair append) restricts the work to only_pairs when
-- the state says the previous version was mirrored, and re-derives the region otherwise;
-- 'keys' (a direct row arrived or left) restricts to only_pairs and leaves the state alone,
-- since direct rows change neither R nor J.
DO $type$
BEGIN
    IF to_regtype('public.region_results_mirror_change') IS NULL THEN
        -- One change of a plan (the rows of region_results_mirror_plan).
        CREATE TYPE public.region_results_mirror_change AS (
            action text,
            reason text,
            region_result_id uuid,
            execution_id integer,
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
            evidence smallint,
            r_xmin xid,
            job_fingerprint text,
            anomaly_kind text,
            anomaly_detail text);
    END IF;
END
$type$;

CREATE OR REPLACE FUNCTION public.region_results_mirror_plan(
    region_result_ids uuid[],
    only_pairs text[] DEFAULT NULL,
    scope text DEFAULT 'region')
RETURNS SETOF public.region_results_mirror_change
LANGUAGE plpgsql STABLE ROWS 20
SET search_path = pg_catalog, public, pg_temp
-- One generic plan per statement, cached for the session: re-planning these statements on
-- every call (custom plans) costs more than running them.
SET plan_cache_mode = force_generic_plan
-- Index-driven plans: these statements read rows by key, and a generic plan cached while
-- the tables were small must not keep scanning them whole once they have grown.
SET enable_seqscan = off
-- Short OLTP statements: JIT compilation would cost far more than it saves.
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    IF scope NOT IN ('region', 'changed_pairs', 'keys') THEN
        RAISE EXCEPTION 'region_results_mirror_plan: unknown scope %', scope;
    END IF;
    RETURN QUERY
    WITH
    src AS (
        SELECT i.region_result AS rr, i.region_result_id AS id, i.r_xmin AS rx,
               i.job_id AS job, i.jobspec_data AS spec, i.job_fingerprint AS fp,
               i.has_state, i.state_xmin, i.state_job_fingerprint AS state_fp
        FROM public.region_results_mirror_inputs i
        WHERE i.region_result_id = ANY (region_result_ids)),
    scoped AS (
        SELECT src.*,
               CASE WHEN scope = 'keys' THEN only_pairs
                    WHEN scope = 'changed_pairs' AND src.state_xmin IS NOT NULL
                         AND src.state_fp = src.fp THEN only_pairs
               END AS pairs,
               scope <> 'keys' AS stamp
        FROM src),
    rule AS (
        SELECT sc.id AS rrid, f.*
        FROM scoped sc
        CROSS JOIN LATERAL public.region_results_mirror_rows(sc.rr, sc.job, sc.spec, sc.pairs) f),
    want AS (
        SELECT ru.*, owner.found IS NOT NULL AS owned
        FROM rule ru
        -- A LATERAL probe with LIMIT, not EXISTS: a cached generic plan must never hash the
        -- whole executions table to answer it.
        LEFT JOIN LATERAL (
            SELECT true AS found FROM public.executions d
            WHERE d.mirror_region_result_id IS NULL AND d.job_id = ru.job_id
              AND d.region = ru.region AND d.model_id = ru.model_id
              AND d.question_id = ru.question_id
            LIMIT 1) owner ON true
        WHERE ru.evidence IS NOT NULL),
    have AS (
        SELECT e.id, e.mirror_region_result_id AS rrid, e.job_id, e.cross_region_execution_id,
               e.region, e.provider_id, e.model_id, e.question_id, e.status, e.started_at,
               e.completed_at, e.created_at, e.output_data, e.receipt_data, e.original_error,
               e.mirror_evidence, sc.id IS NULL AS gone
        FROM public.executions e
        LEFT JOIN scoped sc ON sc.id = e.mirror_region_result_id
        WHERE e.mirror_region_result_id = ANY (region_result_ids)
          AND (sc.pairs IS NULL
               OR jsonb_build_array(e.model_id, e.question_id)::text = ANY (sc.pairs))),
    diff AS (
        SELECT CASE
                   WHEN w.rrid IS NOT NULL AND w.owned AND h.id IS NULL THEN 'left_to_direct'
                   WHEN w.rrid IS NOT NULL AND NOT w.owned AND h.id IS NULL THEN 'insert'
                   WHEN w.rrid IS NOT NULL AND NOT w.owned THEN
                       CASE WHEN (w.job_id, w.cross_region_execution_id, w.region, w.provider_id,
                                  w.status, w.started_at, w.completed_at, w.created_at,
                                  w.output_data, w.receipt_data, w.original_error, w.evidence)
                                 IS NOT DISTINCT FROM
                                 (h.job_id, h.cross_region_execution_id, h.region::text,
                                  h.provider_id::text, h.status::text, h.started_at,
                                  h.completed_at, h.created_at, h.output_data, h.receipt_data,
                                  h.original_error, h.mirror_evidence)
                            THEN 'keep' ELSE 'update' END
                   WHEN EXISTS (SELECT 1 FROM public.transparency_log t WHERE t.execution_id = h.id)
                       THEN 'detach'
                   ELSE 'delete'
               END AS action,
               CASE WHEN h.id IS NOT NULL AND (w.rrid IS NULL OR w.owned) THEN
                   CASE WHEN h.gone THEN 'its region result no longer exists'
                        WHEN w.owned THEN 'a direct row owns its key'
                        ELSE 'the rule no longer yields its pair' END
               END AS reason,
               coalesce(w.rrid, h.rrid) AS rrid, h.id AS execution_id,
               w.job_id, w.cross_region_execution_id, w.region, w.provider_id,
               coalesce(w.model_id, h.model_id) AS model_id,
               coalesce(w.question_id, h.question_id) AS question_id,
               w.status, w.started_at, w.completed_at, w.created_at, w.output_data,
               w.receipt_data, w.original_error, w.evidence
        FROM want w
        FULL JOIN have h
               ON h.rrid = w.rrid AND h.model_id = w.model_id AND h.question_id = w.question_id),
    states AS (
        SELECT 'state' AS action, sc.id AS rrid, sc.rx, sc.fp
        FROM scoped sc
        WHERE sc.stamp
          AND (NOT sc.has_state OR sc.state_xmin IS DISTINCT FROM sc.rx
               OR sc.state_fp IS DISTINCT FROM sc.fp)
        UNION ALL
        SELECT 'forget', s.region_result_id, NULL, NULL
        FROM public.region_results_mirror_state s
        WHERE s.region_result_id = ANY (region_result_ids)
          AND NOT EXISTS (SELECT 1 FROM src WHERE src.id = s.region_result_id)),
    anomalies AS (
        SELECT DISTINCT ru.rrid, ru.anomaly_kind AS kind, ru.anomaly_detail AS detail
        FROM rule ru WHERE ru.anomaly_kind IS NOT NULL
        UNION
        SELECT d.rrid, 'transparency_log_reference',
               format('executions row %s is referenced by transparency_log: detached, not deleted (%s)',
                      d.execution_id, d.reason)
        FROM diff d WHERE d.action = 'detach')
    SELECT d.action, d.reason, d.rrid, d.execution_id, d.job_id, d.cross_region_execution_id,
           d.region, d.provider_id, d.model_id, d.question_id, d.status, d.started_at,
           d.completed_at, d.created_at, d.output_data, d.receipt_data, d.original_error,
           d.evidence, NULL::xid, NULL::text, NULL::text, NULL::text
    FROM diff d WHERE d.action <> 'keep'
    UNION ALL
    SELECT st.action, NULL, st.rrid, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, st.rx, st.fp, NULL, NULL
    FROM states st
    UNION ALL
    SELECT 'anomaly', NULL, a.rrid, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, a.kind, a.detail
    FROM anomalies a
    WHERE NOT EXISTS (SELECT 1 FROM public.region_results_mirror_anomalies k
                      WHERE k.region_result_id = a.rrid AND k.kind = a.kind AND k.detail = a.detail);
END
$$;
