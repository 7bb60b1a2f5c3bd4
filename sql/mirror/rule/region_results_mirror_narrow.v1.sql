-- region_results_mirror_narrow(r, only_pairs): region result r with only the usable elements
-- of these pairs (keys jsonb_build_array(model_id, question_id)::text) left in
-- execution_output.executions, in their order; r itself when only_pairs is NULL or holds a
-- NULL, or r holds no elements array. The rule's rows of those pairs, and their anomalies, are
-- the same for both: a pair's row reads only the usable elements of its pair (objects whose
-- ids are those strings; the last one wins), and what the rule reads of r besides is kept.
-- The path is strict: in lax mode an array among the elements would be searched too, and an
-- object inside it, which the rule skips, taken for one of them. Read by the plan and the
-- detach trigger, which ask the rule about a few pairs of a region result that may hold
-- thousands: the rule then goes through those pairs' elements only.
CREATE OR REPLACE FUNCTION public.region_results_mirror_narrow(r public.region_results,
                                                               only_pairs text[])
RETURNS public.region_results
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF only_pairs IS NOT NULL AND array_position(only_pairs, NULL) IS NULL
       AND jsonb_typeof(r.execution_output -> 'executions') = 'array' THEN
        r.execution_output := jsonb_build_object('executions', coalesce(
            (SELECT jsonb_agg(e.element ORDER BY p.pair, e.n)
             FROM (SELECT DISTINCT k::jsonb AS pair FROM unnest(only_pairs) k) p
             CROSS JOIN LATERAL jsonb_path_query(
                 r.execution_output -> 'executions',
                 'strict $[*] ? (@.type() == "object" && @.model_id == $m && @.question_id == $q)',
                 jsonb_build_object('m', p.pair -> 0, 'q', p.pair -> 1)) WITH ORDINALITY e(element, n)),
            '[]'));
    END IF;
    RETURN r;
END
$$;
REVOKE EXECUTE ON FUNCTION public.region_results_mirror_narrow(public.region_results, text[])
    FROM PUBLIC;
