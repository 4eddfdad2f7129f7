-- Measured GPU utilisation (for the monthly e-mails' advice), and the e-mails sent:
-- one row per message the SMTP server accepted, so a re-run sends nothing twice.
ALTER TABLE jobs ADD COLUMN gpu_utilization REAL;
CREATE TABLE mail_log (
    month TEXT NOT NULL,
    audience TEXT NOT NULL,
    recipient TEXT NOT NULL,
    address TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (month, audience, recipient)
) WITHOUT ROWID;
