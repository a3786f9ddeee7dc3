-- The retention job deletes claims older than MAILROOM_INBOX_RETENTION_DAYS. Claims are inserted in
-- time order, so a BRIN index finds the old ones for almost nothing on each insert.
CREATE INDEX inbox_processed_at_brin ON inbox USING brin (processed_at);
