-- Schema v11: each job's market-based Scope 2 emissions beside the location-based
-- co2e_g (GHG Protocol Scope 2 Guidance: the site's contracts, certificates, supplier
-- rate or residual mix for the year the job ended in; marketconfig.py), in grams CO2e
-- with the low/high bounds, and where the figure comes from: contracts,
-- contracts+location (the rest at the location-based figure), residual-mix, or
-- location-based (no market data for the year: the grid average stands in).
-- Rows written before v11 had no market config to apply: they get what the
-- market-based method gives without one, the location-based figure, as a fresh
-- accounting without `market` settings writes it (`ledger recompute` applies contracts
-- configured later).
ALTER TABLE jobs ADD COLUMN co2e_market_g REAL;
ALTER TABLE jobs ADD COLUMN co2e_market_g_low REAL;
ALTER TABLE jobs ADD COLUMN co2e_market_g_high REAL;
ALTER TABLE jobs ADD COLUMN market_source TEXT;
UPDATE jobs SET co2e_market_g = co2e_g, co2e_market_g_low = co2e_g_low,
    co2e_market_g_high = co2e_g_high, market_source = 'location-based';
