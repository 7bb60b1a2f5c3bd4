-- Version 2 (revision 0011): the rule is asked about only_pairs with the region result narrowed
-- to their elements (region_results_mirror_narrow): the same rows, found without going through
-- every element of a region of thousands for the one pair an update changed. And the state is
-- recorded again when whether the region result is finished changed: version 1 compared its
-- xmin alone, which a region result started and finished in one transaction keeps, and so
-- left `finished` false.

-- region_results_mirror_plan(region_result_ids, only_pairs, record_state): what materialising
-- the rule for these region results would change in executions and in the mirror's tables,
-- computed, not applied (SPEC "Materialising the rule"): the one diff, executed by apply and
-- reported by verify. Ids of region results that no longer exist are accepted (their rows and
-- state go). only_pairs (keys jsonb_build_array(model_id, question_id)::text) restricts the
-- rows looked at: with record_state, only when the state says the rest is mirrored (else the
-- region result is re-derived whole); without, the state is left alone (a direct row came or
-- went: R and J did not change).
CREATE OR REPLACE FUNCTION public.region_results_mirror_plan(
    region_result_ids uuid[],
    only_pairs text[] DEFAULT NULL,
    record_state boolean DEFAULT true)
RETURNS SETOF public.executions_mirror_change
LANGUAGE plpgsql STABLE ROWS 20
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
-- Index-driven plans: a generic plan cached while the tables were small must not keep scanning
-- them whole once they have grown.
SET enable_seqscan = off
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH
    src AS (
        SELECT i.region_result_id AS id, i.region_result AS rr, i.r_xmin AS rx, i.job_id AS job,
               i.jobspec_data AS spec, i.job_status, i.job_fingerprint AS fp, i.has_state,
               i.state_xmin, i.state_job_fingerprint AS state_fp, i.state_finished,
               CASE WHEN only_pairs IS NULL THEN NULL
                    WHEN NOT record_state THEN only_pairs
                    WHEN i.state_xmin IS NOT NULL AND i.state_job_fingerprint = i.job_fingerprint
                        THEN only_pairs
               END AS pairs
        FROM public.region_results_mirror_inputs i
        WHERE i.region_result_id = ANY (region_result_ids)),
    rule AS (
        SELECT s.id AS rrid, f.*
        FROM src s
        CROSS JOIN LATERAL public.region_results_mirror_rows(
            public.region_results_mirror_narrow(s.rr, s.pairs), s.job, s.spec, s.job_status, s.pairs) f),
    want AS (
        SELECT ru.rrid, ru.mirror_row AS w,
               -- A LATERAL probe with LIMIT, not EXISTS: a cached generic plan must never hash
               -- the whole executions table to answer it.
               owner.found IS NOT NULL AS owned
        FROM rule ru
        LEFT JOIN LATERAL (
            SELECT true AS found FROM public.executions d
            WHERE d.mirror_region_result_id IS NULL
              AND d.job_id = (ru.mirror_row).job_id AND d.region = (ru.mirror_row).region
              AND d.model_id = (ru.mirror_row).model_id
              AND nullif(d.question_id, '') = (ru.mirror_row).question_id
            LIMIT 1) owner ON true
        WHERE ru.stored),
    have AS (
        SELECT e.id, e.mirror_region_result_id AS rrid, public.executions_mirror_row(e) AS h,
               s.id IS NULL AS gone
        FROM public.executions e
        LEFT JOIN src s ON s.id = e.mirror_region_result_id
        WHERE e.mirror_region_result_id = ANY (region_result_ids)
          AND (s.pairs IS NULL
               OR jsonb_build_array(e.model_id, e.question_id)::text = ANY (s.pairs))),
    diff AS (
        SELECT coalesce(w.rrid, h.rrid) AS rrid, h.id AS execution_id, w.w, h.h, w.owned,
               CASE
                   WHEN h.id IS NULL AND w.owned THEN 'leave'
                   WHEN h.id IS NULL THEN 'insert'
                   WHEN w.rrid IS NOT NULL AND NOT w.owned THEN
                       CASE WHEN w.w IS NOT DISTINCT FROM h.h THEN NULL ELSE 'update' END
                   WHEN EXISTS (SELECT 1 FROM public.transparency_log t WHERE t.execution_id = h.id)
                       THEN 'detach'
                   ELSE 'delete'
               END::public.executions_mirror_action AS action,
               CASE
                   WHEN h.id IS NULL AND NOT w.owned THEN 'missing'
                   WHEN h.id IS NULL THEN NULL
                   WHEN w.rrid IS NOT NULL AND NOT w.owned THEN 'stale'
                   WHEN w.owned THEN 'beside_direct'
                   ELSE 'orphaned'
               END::public.executions_mirror_finding AS finding
        FROM want w
        FULL JOIN have h
               ON h.rrid = w.rrid AND (h.h).model_id = (w.w).model_id
              AND (h.h).question_id = (w.w).question_id)
    SELECT d.action, d.finding, d.rrid, d.execution_id,
           CASE WHEN d.action IN ('insert', 'update') THEN d.w ELSE d.h END,
           NULL::xid, NULL::text, NULL::boolean, NULL::public.executions_mirror_anomaly, NULL::text
    FROM diff d
    WHERE d.action IS NOT NULL
    UNION ALL
    -- The state: the versions of R and J the rows now reflect, and whether R is finished.
    SELECT 'record_state', NULL, s.id, NULL, NULL, s.rx, s.fp, f.finished, NULL, NULL
    FROM src s
    CROSS JOIN LATERAL (SELECT public.executions_mirror_finished(
                            public.region_results_mirror_region_status((s.rr).status::text,
                                                                       (s.rr).completed_at))
                        AS finished) f
    WHERE record_state
      AND (NOT s.has_state OR s.state_xmin IS DISTINCT FROM s.rx OR s.state_fp IS DISTINCT FROM s.fp
           -- (a region result started and finished in one transaction keeps its xmin)
           OR s.state_finished IS DISTINCT FROM f.finished)
    UNION ALL
    SELECT 'forget_state', NULL, st.region_result_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM public.region_results_mirror_state st
    WHERE st.region_result_id = ANY (region_result_ids)
      AND NOT EXISTS (SELECT 1 FROM src s WHERE s.id = st.region_result_id)
    UNION ALL
    -- Anomalies not yet recorded, and rows kept for the transparency log.
    SELECT 'record_anomaly', NULL, a.rrid, NULL, NULL, NULL, NULL, NULL, a.kind, a.detail
    FROM (SELECT DISTINCT ru.rrid, ru.anomaly_kind AS kind, ru.anomaly_detail AS detail
          FROM rule ru WHERE ru.anomaly_kind IS NOT NULL
          UNION
          SELECT d.rrid, 'transparency_log_reference',
                 format('executions row %s is referenced by transparency_log: detached, not deleted (%s)',
                        d.execution_id,
                        CASE WHEN d.owned THEN 'a direct row owns its key'
                             WHEN d.w IS NULL AND NOT EXISTS (SELECT 1 FROM src s WHERE s.id = d.rrid)
                                 THEN 'its region result no longer exists'
                             ELSE 'the rule no longer yields its pair' END)
          FROM diff d WHERE d.action = 'detach') a
    WHERE NOT EXISTS (SELECT 1 FROM public.region_results_mirror_anomalies k
                      WHERE k.region_result_id = a.rrid AND k.kind = a.kind AND k.detail = a.detail);
END
$$;
