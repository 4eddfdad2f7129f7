-- The scheduler's own id where the key is another (an array task's JobIDRaw); then
-- schema.merge_placeholders folds the rows doubled by slurmdbd's placeholder record
-- into the job's own.
ALTER TABLE jobs ADD COLUMN job_id_raw TEXT;
