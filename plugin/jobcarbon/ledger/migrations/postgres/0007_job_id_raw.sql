-- The scheduler's own id where the key is another: see ../sqlite/0007_job_id_raw.sql.
ALTER TABLE jobs ADD COLUMN job_id_raw TEXT;
