-- The totals are kept by Ledger.write, a batch at a time, not row by row; an
-- unchanged row is found by comparing its columns, not a digest computed in Python.
DROP TRIGGER jobs_count_insert;
DROP TRIGGER jobs_count_update;
DROP TRIGGER jobs_count_delete;
ALTER TABLE jobs DROP COLUMN row_digest;
