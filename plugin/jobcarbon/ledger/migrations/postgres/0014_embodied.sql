-- Each job's embodied (Scope 3) emissions: see ../sqlite/0014_embodied.sql.
ALTER TABLE jobs ADD COLUMN co2e_embodied_g DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN co2e_embodied_g_low DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN co2e_embodied_g_high DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN embodied_source TEXT;
