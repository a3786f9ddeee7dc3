-- The retention job deletes email summaries and finished deliveries (with their attempts) older than
-- MAILROOM_WEBHOOKS_SUMMARY_RETENTION_DAYS / _DELIVERY_RETENTION_DAYS.
CREATE INDEX email_summaries_recorded_brin ON email_summaries USING brin (recorded_at);
CREATE INDEX deliveries_created_brin ON deliveries USING brin (created_at);
