-- Schema v9: each job's usage kept apart from its footprint, so that `jobcarbon ledger
-- recompute` can account it again with the current config and factor data.
--
-- The footprint's provenance, in `jobs`: where the PUE came from (constant | monthly),
-- the intensity's source (constant | region | series | provider <name>) and its data
-- version (the value, the bundled table's dataset/region and version, the hourly CSV's
-- digest, the synced hours' digest), and a digest of the config's factors behind the
-- job (its cluster's power figures and hardware rules, its site's PUE and grid keys, the
-- uncertainties). NULL on jobs accounted before v9.
ALTER TABLE jobs ADD COLUMN pue_source TEXT;
ALTER TABLE jobs ADD COLUMN intensity_source TEXT;
ALTER TABLE jobs ADD COLUMN intensity_version TEXT;
ALTER TABLE jobs ADD COLUMN config_digest TEXT;
-- Everything the footprint model reads from a job, as the source gave it: times in
-- epoch seconds (to the microsecond), gpu_model before the hardware rules resolve it,
-- the Kubernetes node labels as a JSON object (NULL: none), the measured energies, each
-- with the components it covers, which no other covers ('cpu,memory:180000.0;gpu:9e5'
-- in joules, the figures exact; NULL: not measured). `missing` is NULL
-- when the usage is complete, else the columns that could not be rebuilt, comma-separated.
CREATE TABLE job_usage (
    cluster TEXT NOT NULL,
    job_id TEXT NOT NULL,
    job_id_raw TEXT,
    user TEXT NOT NULL,
    project TEXT NOT NULL,
    partition TEXT NOT NULL,
    state TEXT NOT NULL,
    name TEXT NOT NULL,
    submit_time REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    gpu_count REAL NOT NULL,
    gpu_model TEXT,
    cpu_count INTEGER NOT NULL,
    memory_gb REAL NOT NULL,
    node_count INTEGER NOT NULL,
    nodes TEXT NOT NULL,
    labels TEXT,
    gpu_utilization REAL,
    cpu_used_seconds REAL,
    measured TEXT,
    missing TEXT,
    PRIMARY KEY (cluster, job_id)
) WITHOUT ROWID;
-- The jobs of a v8 ledger, their usage rebuilt from the columns they have. Not kept
-- before v9, so missing: the node list, the node labels, the GPU name as the source
-- gave it (the resolved model stands in), the CPU time used, and for measured jobs the
-- measurement (inferred from the method: a measured job's IT energy over every
-- component, as Slurm's counter covers them; a mixed job's GPU energy, as
-- dcgm-exporter's covers the GPUs).
INSERT INTO job_usage
SELECT cluster, job_id, job_id_raw, user, project, partition, state, name, submit_time,
    start_time, end_time, gpu_count, gpu_model, cpu_count, memory_gb, node_count, '', NULL,
    gpu_utilization, NULL,
    CASE method WHEN 'estimated' THEN NULL
        WHEN 'measured' THEN 'cpu,gpu,memory:' || printf('%!.17g', energy_it_kwh * 3600000.0)
        ELSE 'gpu:' || printf('%!.17g', energy_gpu_kwh * 3600000.0) END,
    'nodes,labels,gpu_model,cpu_used_seconds'
        || CASE method WHEN 'estimated' THEN '' ELSE ',measured' END
FROM jobs;
-- Each `jobcarbon ledger recompute` run: what it ran with, how far it got (the last
-- (cluster, job_id) done: it resumes there), what it saw and changed, and the change in
-- CO2e and kWh by site and month (a JSON list of [site, month, jobs, co2e_g, kwh]).
-- status: running, finished or interrupted (a later run found it stopped).
CREATE TABLE recompute_runs (
    run_id INTEGER PRIMARY KEY,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    scope TEXT NOT NULL,
    config_digest TEXT NOT NULL,
    factors_version TEXT NOT NULL,
    intensity_versions TEXT NOT NULL,
    after_cluster TEXT,
    after_job_id TEXT,
    jobs_seen INTEGER NOT NULL,
    jobs_changed INTEGER NOT NULL,
    jobs_incomplete INTEGER NOT NULL,
    jobs_failed INTEGER NOT NULL,
    deltas TEXT NOT NULL,
    status TEXT NOT NULL
);
