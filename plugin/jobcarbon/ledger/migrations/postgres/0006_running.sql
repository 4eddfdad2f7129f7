-- The usage so far of jobs still running: see ../sqlite/0006_running.sql.
CREATE TABLE running (
    cluster TEXT NOT NULL,
    "user" TEXT NOT NULL,
    project TEXT NOT NULL,
    gpu_model TEXT NOT NULL,
    jobs BIGINT NOT NULL,
    gpus DOUBLE PRECISION NOT NULL,
    gpu_seconds DOUBLE PRECISION NOT NULL,
    energy_facility_kwh DOUBLE PRECISION NOT NULL,
    co2e_g DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (cluster, "user", project, gpu_model)
);
