-- Each job's market-based Scope 2 emissions: see ../sqlite/0011_market.sql.
ALTER TABLE jobs ADD COLUMN co2e_market_g DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN co2e_market_g_low DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN co2e_market_g_high DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN market_source TEXT;
UPDATE jobs SET co2e_market_g = co2e_g, co2e_market_g_low = co2e_g_low,
    co2e_market_g_high = co2e_g_high, market_source = 'location-based';
