-- 1 where some hour of the job's run had no value from its site's grid provider yet
-- (past the sync's watermark, or one the provider left out), so its footprint took the
-- provider's fallback for it and is recomputed once the hour is synced; else 0. Jobs
-- accounted before this version are 0: they are not known to be waiting.
ALTER TABLE jobs ADD COLUMN intensity_pending INTEGER NOT NULL DEFAULT 0;
-- the few waiting jobs of a site, found after each sync without reading the others
CREATE INDEX jobs_intensity_pending ON jobs (site) WHERE intensity_pending = 1;
