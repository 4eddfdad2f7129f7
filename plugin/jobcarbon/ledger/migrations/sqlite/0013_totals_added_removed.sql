-- Schema v13: the totals count what batches added and removed per label set, beside
-- the net (the jobs rows' sum): <column>_added and <column>_removed only ever grow, so
-- the exporter's counters never go down when a job is re-accounted lower or moves to
-- other labels (ledger/dialect.py). Also the facility overhead energy and the
-- market-based Scope 2 emissions (co2e_market_g, v11). Rebuilt from the jobs rows:
-- added starts at the net, removed at 0.
DROP TABLE totals;
CREATE TABLE totals (
    cluster TEXT NOT NULL,
    user TEXT NOT NULL,
    project TEXT NOT NULL,
    partition TEXT NOT NULL,
    gpu_model TEXT NOT NULL,
    state TEXT NOT NULL,
    method TEXT NOT NULL,
    jobs INTEGER NOT NULL,
    jobs_added INTEGER NOT NULL,
    jobs_removed INTEGER NOT NULL,
    gpu_seconds REAL NOT NULL,
    gpu_seconds_added REAL NOT NULL,
    gpu_seconds_removed REAL NOT NULL,
    cpu_seconds REAL NOT NULL,
    cpu_seconds_added REAL NOT NULL,
    cpu_seconds_removed REAL NOT NULL,
    energy_gpu_kwh REAL NOT NULL,
    energy_gpu_kwh_added REAL NOT NULL,
    energy_gpu_kwh_removed REAL NOT NULL,
    energy_cpu_kwh REAL NOT NULL,
    energy_cpu_kwh_added REAL NOT NULL,
    energy_cpu_kwh_removed REAL NOT NULL,
    energy_memory_kwh REAL NOT NULL,
    energy_memory_kwh_added REAL NOT NULL,
    energy_memory_kwh_removed REAL NOT NULL,
    energy_overhead_kwh REAL NOT NULL,
    energy_overhead_kwh_added REAL NOT NULL,
    energy_overhead_kwh_removed REAL NOT NULL,
    energy_facility_kwh REAL NOT NULL,
    energy_facility_kwh_added REAL NOT NULL,
    energy_facility_kwh_removed REAL NOT NULL,
    co2e_g REAL NOT NULL,
    co2e_g_added REAL NOT NULL,
    co2e_g_removed REAL NOT NULL,
    co2e_market_g REAL NOT NULL,
    co2e_market_g_added REAL NOT NULL,
    co2e_market_g_removed REAL NOT NULL,
    last_end_time INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (cluster, user, project, partition, gpu_model, state, method)
) WITHOUT ROWID;
CREATE INDEX totals_by_seq ON totals (seq);
INSERT INTO totals
    SELECT cluster, user, project, partition, COALESCE(gpu_model, ''), state, method,
        COUNT(*), COUNT(*), 0,
        SUM(gpu_seconds), SUM(gpu_seconds), 0,
        SUM(cpu_seconds), SUM(cpu_seconds), 0,
        SUM(energy_gpu_kwh), SUM(energy_gpu_kwh), 0,
        SUM(energy_cpu_kwh), SUM(energy_cpu_kwh), 0,
        SUM(energy_memory_kwh), SUM(energy_memory_kwh), 0,
        SUM(energy_facility_kwh - energy_gpu_kwh - energy_cpu_kwh - energy_memory_kwh), SUM(energy_facility_kwh - energy_gpu_kwh - energy_cpu_kwh - energy_memory_kwh), 0,
        SUM(energy_facility_kwh), SUM(energy_facility_kwh), 0,
        SUM(co2e_g), SUM(co2e_g), 0,
        COALESCE(SUM(co2e_market_g), 0), COALESCE(SUM(co2e_market_g), 0), 0,
        COALESCE(MAX(end_time), 0), 0
    FROM jobs GROUP BY 1, 2, 3, 4, 5, 6, 7;
