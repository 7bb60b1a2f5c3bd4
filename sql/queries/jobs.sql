-- Which jobs exist (beaconsql.jobs): a jobspec id is known when a jobs row or a run has it.
-- Read by the CLI before a job's reads, to name the closest ids for a misspelt one.
-- Parameters are psycopg named placeholders.

-- name: known
-- Whether a jobspec id names a job (a jobs row or a run), and whether there is any job at all.
SELECT EXISTS (SELECT 1 FROM public.jobs WHERE jobspec_id = %(jobspec_id)s)
       OR EXISTS (SELECT 1 FROM public.cross_region_executions WHERE jobspec_id = %(jobspec_id)s),
       EXISTS (SELECT 1 FROM public.jobs) OR EXISTS (SELECT 1 FROM public.cross_region_executions);

-- name: candidates
-- Jobspec ids to suggest for an unknown one, read through indexes only: the n on either side
-- of it in sort order (a typo near the end keeps the prefix), and the n newest, of jobs and of
-- runs. Ranked in Python (difflib): pg_trgm is not there by default.
(SELECT jobspec_id FROM public.jobs
 WHERE jobspec_id < %(jobspec_id)s ORDER BY jobspec_id DESC LIMIT %(n)s)
UNION
(SELECT jobspec_id FROM public.jobs
 WHERE jobspec_id > %(jobspec_id)s ORDER BY jobspec_id LIMIT %(n)s)
UNION
(SELECT jobspec_id FROM public.jobs ORDER BY created_at DESC LIMIT %(n)s)
UNION
(SELECT jobspec_id FROM public.cross_region_executions
 WHERE jobspec_id < %(jobspec_id)s ORDER BY jobspec_id DESC LIMIT %(n)s)
UNION
(SELECT jobspec_id FROM public.cross_region_executions
 WHERE jobspec_id > %(jobspec_id)s ORDER BY jobspec_id LIMIT %(n)s)
UNION
(SELECT jobspec_id FROM public.cross_region_executions ORDER BY created_at DESC LIMIT %(n)s);
