-- Schema v12: the e-mail log keeps every message the SMTP server accepted, a re-send
-- (`report monthly --send --resend`) beside the first rather than over it (numbered in
-- the order they were sent: two sends in one second are two rows), each with the
-- figures it told (the report's facility energy and location-based CO2e), so that
-- after a `ledger recompute` the log still says what each person was sent and a run
-- can name the messages whose figures have changed since. Messages logged before v12
-- have no figures (NULL).
CREATE TABLE mail_log_v12 (
    message INTEGER PRIMARY KEY,
    month TEXT NOT NULL,
    audience TEXT NOT NULL,
    recipient TEXT NOT NULL,
    address TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    energy_kwh REAL,
    co2e_kg REAL
);
INSERT INTO mail_log_v12 (month, audience, recipient, address, message_id, sent_at)
    SELECT month, audience, recipient, address, message_id, sent_at FROM mail_log
    ORDER BY sent_at;
DROP TABLE mail_log;
ALTER TABLE mail_log_v12 RENAME TO mail_log;
CREATE INDEX mail_log_month ON mail_log (month, audience, recipient);
