-- Schema v14: each job's embodied (Scope 3) emissions, its share of the manufacture of
-- the node it ran on, amortised over the node's lifetime as the Green Software
-- Foundation's SCI does (embodied.py): grams CO2e with the low/high bounds, and where
-- the node's figure comes from: a bundled entry's name (data/embodied.csv, with its
-- source and year) or "site config". NULL: the job's cluster (or hardware rule) has no
-- embodied settings, "not configured", never a guess. Rows written before v14 had none
-- to apply: they stay NULL until `ledger recompute` applies settings configured since.
ALTER TABLE jobs ADD COLUMN co2e_embodied_g REAL;
ALTER TABLE jobs ADD COLUMN co2e_embodied_g_low REAL;
ALTER TABLE jobs ADD COLUMN co2e_embodied_g_high REAL;
ALTER TABLE jobs ADD COLUMN embodied_source TEXT;
