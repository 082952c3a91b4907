-- SQLite only (its 0044 rewrites CHECK lists that it evaluated through a temporary B-tree per row).
-- PostgreSQL evaluates `IN` lists of constants in place, so its schema does not change.
SELECT 1;
