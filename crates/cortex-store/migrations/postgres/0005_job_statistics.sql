-- The claim query's plan depends on fresh statistics of `job` (without them the planner sorts the whole
-- backlog per claim). Ask autovacuum to analyse this busy table far more often than the default 10 %.
ALTER TABLE job SET (autovacuum_analyze_scale_factor = 0.01, autovacuum_analyze_threshold = 500);
