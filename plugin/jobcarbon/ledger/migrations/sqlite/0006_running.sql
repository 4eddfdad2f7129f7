-- The usage so far of jobs still running (the pod watcher's), one row per label
-- set, replaced cluster by cluster: the exporter's jobcarbon_running_* gauges.
CREATE TABLE running (
    cluster TEXT NOT NULL,
    user TEXT NOT NULL,
    project TEXT NOT NULL,
    gpu_model TEXT NOT NULL,
    jobs INTEGER NOT NULL,
    gpus REAL NOT NULL,
    gpu_seconds REAL NOT NULL,
    energy_facility_kwh REAL NOT NULL,
    co2e_g REAL NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (cluster, user, project, gpu_model)
) WITHOUT ROWID;
