-- Each site's grid intensity by UTC hour, as `jobcarbon grid sync` fetched it from the
-- site's provider. `hour` is the hour's start in hours since the epoch; `measured` is 1
-- where the provider measured it, 0 where it estimated, imputed or forecast it;
-- `fetched_at` epoch seconds. A corrected hour fetched again replaces the older row.
CREATE TABLE grid_hours (
    site TEXT NOT NULL,
    hour INTEGER NOT NULL,
    intensity_g_per_kwh REAL NOT NULL,
    provider TEXT NOT NULL,
    signal TEXT NOT NULL,
    measured INTEGER NOT NULL,
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (site, hour)
) WITHOUT ROWID;
