-- The retention job deletes settled deliveries older than MAILROOM_SENDER_DELIVERY_RETENTION_DAYS.
CREATE INDEX deliveries_created_brin ON deliveries USING brin (created_at);
