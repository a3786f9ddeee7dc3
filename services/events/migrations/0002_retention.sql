-- The retention job deletes SNS message records older than MAILROOM_EVENTS_SNS_MESSAGE_RETENTION_DAYS;
-- rows arrive in time order, so a BRIN index finds the old ones at almost no cost per insert.
CREATE INDEX sns_messages_received_brin ON sns_messages USING brin (received_at);
