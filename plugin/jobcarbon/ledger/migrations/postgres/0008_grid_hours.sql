-- Each site's grid intensity by UTC hour: see ../sqlite/0008_grid_hours.sql.
CREATE TABLE grid_hours (
    site TEXT NOT NULL,
    hour BIGINT NOT NULL,
    intensity_g_per_kwh DOUBLE PRECISION NOT NULL,
    provider TEXT NOT NULL,
    signal TEXT NOT NULL,
    measured INTEGER NOT NULL,
    fetched_at BIGINT NOT NULL,
    PRIMARY KEY (site, hour)
);
