CREATE TABLE totals (
    cluster TEXT NOT NULL,
    user TEXT NOT NULL,
    project TEXT NOT NULL,
    partition TEXT NOT NULL,
    gpu_model TEXT NOT NULL,
    state TEXT NOT NULL,
    method TEXT NOT NULL,
    jobs INTEGER NOT NULL,
    gpu_seconds REAL NOT NULL,
    cpu_seconds REAL NOT NULL,
    energy_gpu_kwh REAL NOT NULL,
    energy_cpu_kwh REAL NOT NULL,
    energy_memory_kwh REAL NOT NULL,
    energy_facility_kwh REAL NOT NULL,
    co2e_g REAL NOT NULL,
    last_end_time INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (cluster, user, project, partition, gpu_model, state, method)
) WITHOUT ROWID;
CREATE INDEX totals_by_seq ON totals (seq);
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO totals VALUES (
        NEW.cluster, NEW.user, NEW.project, NEW.partition,
        COALESCE(NEW.gpu_model, ''), NEW.state, NEW.method, 1,
        NEW.gpu_seconds, NEW.cpu_seconds, NEW.energy_gpu_kwh,
        NEW.energy_cpu_kwh, NEW.energy_memory_kwh, NEW.energy_facility_kwh,
        NEW.co2e_g, COALESCE(NEW.end_time, 0),
        (SELECT COALESCE(MAX(seq), 0) + 1 FROM totals))
    ON CONFLICT (cluster, user, project, partition, gpu_model, state, method)
    DO UPDATE SET
        jobs = jobs + excluded.jobs,
        gpu_seconds = gpu_seconds + excluded.gpu_seconds,
        cpu_seconds = cpu_seconds + excluded.cpu_seconds,
        energy_gpu_kwh = energy_gpu_kwh + excluded.energy_gpu_kwh,
        energy_cpu_kwh = energy_cpu_kwh + excluded.energy_cpu_kwh,
        energy_memory_kwh = energy_memory_kwh + excluded.energy_memory_kwh,
        energy_facility_kwh = energy_facility_kwh + excluded.energy_facility_kwh,
        co2e_g = co2e_g + excluded.co2e_g,
        last_end_time = MAX(last_end_time, excluded.last_end_time),
        seq = excluded.seq;
END;
CREATE TRIGGER jobs_count_update AFTER UPDATE ON jobs BEGIN
    INSERT INTO totals VALUES (
        OLD.cluster, OLD.user, OLD.project, OLD.partition,
        COALESCE(OLD.gpu_model, ''), OLD.state, OLD.method, -1,
        -OLD.gpu_seconds, -OLD.cpu_seconds, -OLD.energy_gpu_kwh,
        -OLD.energy_cpu_kwh, -OLD.energy_memory_kwh, -OLD.energy_facility_kwh,
        -OLD.co2e_g, 0,
        (SELECT COALESCE(MAX(seq), 0) + 1 FROM totals))
    ON CONFLICT (cluster, user, project, partition, gpu_model, state, method)
    DO UPDATE SET
        jobs = jobs + excluded.jobs,
        gpu_seconds = gpu_seconds + excluded.gpu_seconds,
        cpu_seconds = cpu_seconds + excluded.cpu_seconds,
        energy_gpu_kwh = energy_gpu_kwh + excluded.energy_gpu_kwh,
        energy_cpu_kwh = energy_cpu_kwh + excluded.energy_cpu_kwh,
        energy_memory_kwh = energy_memory_kwh + excluded.energy_memory_kwh,
        energy_facility_kwh = energy_facility_kwh + excluded.energy_facility_kwh,
        co2e_g = co2e_g + excluded.co2e_g,
        last_end_time = MAX(last_end_time, excluded.last_end_time),
        seq = excluded.seq;
    INSERT INTO totals VALUES (
        NEW.cluster, NEW.user, NEW.project, NEW.partition,
        COALESCE(NEW.gpu_model, ''), NEW.state, NEW.method, 1,
        NEW.gpu_seconds, NEW.cpu_seconds, NEW.energy_gpu_kwh,
        NEW.energy_cpu_kwh, NEW.energy_memory_kwh, NEW.energy_facility_kwh,
        NEW.co2e_g, COALESCE(NEW.end_time, 0),
        (SELECT COALESCE(MAX(seq), 0) + 1 FROM totals))
    ON CONFLICT (cluster, user, project, partition, gpu_model, state, method)
    DO UPDATE SET
        jobs = jobs + excluded.jobs,
        gpu_seconds = gpu_seconds + excluded.gpu_seconds,
        cpu_seconds = cpu_seconds + excluded.cpu_seconds,
        energy_gpu_kwh = energy_gpu_kwh + excluded.energy_gpu_kwh,
        energy_cpu_kwh = energy_cpu_kwh + excluded.energy_cpu_kwh,
        energy_memory_kwh = energy_memory_kwh + excluded.energy_memory_kwh,
        energy_facility_kwh = energy_facility_kwh + excluded.energy_facility_kwh,
        co2e_g = co2e_g + excluded.co2e_g,
        last_end_time = MAX(last_end_time, excluded.last_end_time),
        seq = excluded.seq;
END;
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
    INSERT INTO totals VALUES (
        OLD.cluster, OLD.user, OLD.project, OLD.partition,
        COALESCE(OLD.gpu_model, ''), OLD.state, OLD.method, -1,
        -OLD.gpu_seconds, -OLD.cpu_seconds, -OLD.energy_gpu_kwh,
        -OLD.energy_cpu_kwh, -OLD.energy_memory_kwh, -OLD.energy_facility_kwh,
        -OLD.co2e_g, 0,
        (SELECT COALESCE(MAX(seq), 0) + 1 FROM totals))
    ON CONFLICT (cluster, user, project, partition, gpu_model, state, method)
    DO UPDATE SET
        jobs = jobs + excluded.jobs,
        gpu_seconds = gpu_seconds + excluded.gpu_seconds,
        cpu_seconds = cpu_seconds + excluded.cpu_seconds,
        energy_gpu_kwh = energy_gpu_kwh + excluded.energy_gpu_kwh,
        energy_cpu_kwh = energy_cpu_kwh + excluded.energy_cpu_kwh,
        energy_memory_kwh = energy_memory_kwh + excluded.energy_memory_kwh,
        energy_facility_kwh = energy_facility_kwh + excluded.energy_facility_kwh,
        co2e_g = co2e_g + excluded.co2e_g,
        last_end_time = MAX(last_end_time, excluded.last_end_time),
        seq = excluded.seq;
END;
INSERT INTO totals
    SELECT cluster, user, project, partition, COALESCE(gpu_model, ''), state, method,
        COUNT(*), SUM(gpu_seconds), SUM(cpu_seconds), SUM(energy_gpu_kwh),
        SUM(energy_cpu_kwh), SUM(energy_memory_kwh), SUM(energy_facility_kwh), SUM(co2e_g),
        COALESCE(MAX(end_time), 0), 0
    FROM jobs GROUP BY 1, 2, 3, 4, 5, 6, 7;
CREATE TABLE ingest_errors (
    stage TEXT PRIMARY KEY,
    count INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE gauges (
    name TEXT PRIMARY KEY,
    value REAL NOT NULL
) WITHOUT ROWID;
