-- PostgreSQL ledgers start at schema v5, created in one step; later versions add
-- a file here and one under ../sqlite.
CREATE TABLE jobs (
    cluster TEXT NOT NULL,
    job_id TEXT NOT NULL,
    "user" TEXT NOT NULL,
    project TEXT NOT NULL,
    partition TEXT NOT NULL,
    state TEXT NOT NULL,
    name TEXT NOT NULL,
    submit_time BIGINT NOT NULL,
    start_time BIGINT,
    end_time BIGINT,
    month TEXT NOT NULL,
    gpu_count DOUBLE PRECISION NOT NULL,
    gpu_model TEXT,
    cpu_count BIGINT NOT NULL,
    memory_gb DOUBLE PRECISION NOT NULL,
    node_count BIGINT NOT NULL,
    gpu_seconds DOUBLE PRECISION NOT NULL,
    cpu_seconds DOUBLE PRECISION NOT NULL,
    energy_gpu_kwh DOUBLE PRECISION NOT NULL,
    energy_cpu_kwh DOUBLE PRECISION NOT NULL,
    energy_memory_kwh DOUBLE PRECISION NOT NULL,
    energy_it_kwh DOUBLE PRECISION NOT NULL,
    energy_facility_kwh DOUBLE PRECISION NOT NULL,
    co2e_g DOUBLE PRECISION NOT NULL,
    co2e_g_low DOUBLE PRECISION NOT NULL,
    co2e_g_high DOUBLE PRECISION NOT NULL,
    pue DOUBLE PRECISION NOT NULL,
    intensity_g_per_kwh DOUBLE PRECISION NOT NULL,
    method TEXT NOT NULL,
    site TEXT NOT NULL,
    factors_version TEXT NOT NULL,
    recorded_at BIGINT NOT NULL,
    gpu_utilization DOUBLE PRECISION,
    PRIMARY KEY (cluster, job_id)
);
CREATE INDEX jobs_month ON jobs (month);
CREATE INDEX jobs_end_time ON jobs (end_time);
CREATE TABLE watermarks (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE totals (
    cluster TEXT NOT NULL,
    "user" TEXT NOT NULL,
    project TEXT NOT NULL,
    partition TEXT NOT NULL,
    gpu_model TEXT NOT NULL,
    state TEXT NOT NULL,
    method TEXT NOT NULL,
    jobs BIGINT NOT NULL,
    gpu_seconds DOUBLE PRECISION NOT NULL,
    cpu_seconds DOUBLE PRECISION NOT NULL,
    energy_gpu_kwh DOUBLE PRECISION NOT NULL,
    energy_cpu_kwh DOUBLE PRECISION NOT NULL,
    energy_memory_kwh DOUBLE PRECISION NOT NULL,
    energy_facility_kwh DOUBLE PRECISION NOT NULL,
    co2e_g DOUBLE PRECISION NOT NULL,
    last_end_time BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (cluster, "user", project, partition, gpu_model, state, method)
);
CREATE INDEX totals_by_seq ON totals (seq);
CREATE TABLE ingest_errors (stage TEXT PRIMARY KEY, count BIGINT NOT NULL);
CREATE TABLE gauges (name TEXT PRIMARY KEY, value DOUBLE PRECISION NOT NULL);
CREATE TABLE mail_log (
    month TEXT NOT NULL,
    audience TEXT NOT NULL,
    recipient TEXT NOT NULL,
    address TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    PRIMARY KEY (month, audience, recipient)
);
