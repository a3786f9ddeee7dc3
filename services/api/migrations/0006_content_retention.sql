-- Stored content (html, text, custom headers, the attachments' list) is removed by the retention job
-- MAILROOM_API_CONTENT_RETENTION_DAYS after the email was accepted; the log entry stays. Emails are
-- inserted in time order, so a BRIN index finds the old ones at almost no cost per insert.
ALTER TABLE emails ADD COLUMN content_purged_at timestamptz;
CREATE INDEX emails_created_brin ON emails USING brin (created_at);
