-- Jobs waiting for their site's grid hours: see ../sqlite/0010_intensity_pending.sql.
ALTER TABLE jobs ADD COLUMN intensity_pending INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_intensity_pending ON jobs (site) WHERE intensity_pending = 1;
