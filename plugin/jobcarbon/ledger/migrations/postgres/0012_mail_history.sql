-- Every message sent, with the figures it told: see ../sqlite/0012_mail_history.sql.
ALTER TABLE mail_log DROP CONSTRAINT mail_log_pkey;
ALTER TABLE mail_log ADD COLUMN message BIGSERIAL PRIMARY KEY;
ALTER TABLE mail_log ADD COLUMN energy_kwh DOUBLE PRECISION;
ALTER TABLE mail_log ADD COLUMN co2e_kg DOUBLE PRECISION;
CREATE INDEX mail_log_month ON mail_log (month, audience, recipient);
