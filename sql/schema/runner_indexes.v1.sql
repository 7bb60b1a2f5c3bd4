-- The runner's indexes on the tables the baseline creates or adopts (runner-app.md sections
-- 1.2-1.4: 0003, 0004, 0005, 0007, 0008, 0009, the hand-run 007_, 0010). Read by
-- migrations/versions/0001_baseline.py, which builds each one CONCURRENTLY outside a
-- transaction, records it when it did not exist, and (online) rebuilds one left INVALID by
-- an interrupted build. One statement per line.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_jobs_status ON public.jobs (status);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_jobs_created_at ON public.jobs (created_at);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_jobs_updated_at ON public.jobs (updated_at);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_jobs_jobspec_data_gin ON public.jobs USING gin (jobspec_data);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_jobs_status_created ON public.jobs (status, created_at DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_ipfs_cid ON public.executions (ipfs_cid) WHERE ipfs_cid IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_job_id ON public.executions (job_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_status ON public.executions (status);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_region ON public.executions (region);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_created_at ON public.executions (created_at);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_job_created_desc ON public.executions (job_id, created_at DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_job_status_created ON public.executions (job_id, status, created_at DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_cross_region_execution_id ON public.executions (cross_region_execution_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_model_id ON public.executions (model_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_model_region ON public.executions (model_id, region);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_classification ON public.executions (response_classification);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_substantive ON public.executions (is_substantive);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_content_refusal ON public.executions (is_content_refusal);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_response_length ON public.executions (response_length);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_dedup_with_question ON public.executions (job_id, region, model_id, question_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_retry_count ON public.executions (retry_count);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_status_retry ON public.executions (status, retry_count) WHERE status IN ('failed', 'timeout', 'error');
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_transparency_log_index ON public.transparency_log (log_index);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_transparency_log_execution_id ON public.transparency_log (execution_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_transparency_log_job_id ON public.transparency_log (job_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_transparency_log_logged_at ON public.transparency_log (logged_at);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_transparency_log_merkle_root ON public.transparency_log (merkle_tree_root);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_cross_region_executions_jobspec_id ON public.cross_region_executions (jobspec_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_cross_region_executions_status ON public.cross_region_executions (status);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_cross_region_executions_created_at ON public.cross_region_executions (created_at);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_region_results_cross_region_execution_id ON public.region_results (cross_region_execution_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_region_results_region ON public.region_results (region);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_region_results_status ON public.region_results (status);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_region_results_provider_id ON public.region_results (provider_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_region_results_model_id ON public.region_results (model_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_region_results_model_region ON public.region_results (model_id, region);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_cross_region_analyses_cross_region_execution_id ON public.cross_region_analyses (cross_region_execution_id);
