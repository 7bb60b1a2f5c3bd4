-- verify_runs (revision 0005): the findings of each `beaconsql verify`, counts by kind.
-- Written by the CLI's verify (beaconsql.verify.record_findings); read by serve_metrics()
-- for /metrics. Only the counts are kept (the findings themselves are verify's output).
CREATE TABLE IF NOT EXISTS public.region_results_verify_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope_job   text,
    examined    bigint NOT NULL,
    counts      jsonb NOT NULL,
    exit_code   bigint NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE public.region_results_verify_runs IS
    'beaconsql: counts by kind of each verify run (drift, anomalies, duplicates, detached), for /metrics';
