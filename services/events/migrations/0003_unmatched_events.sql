-- Issue 22: authentic SES events that match no Mailroom email (no Mailroom message tags: another
-- application's mail on a shared topic, a send from outside Mailroom) or that could not be read,
-- kept for the operator to inspect (`mailroom-events unmatched`) and deleted after
-- MAILROOM_EVENTS_UNMATCHED_RETENTION_DAYS by the retention job. Written in the statement that
-- records the SNS message, so it exists exactly when that row was new. `record` keeps what
-- identifies the mail (event type, SES message id, source, destination, tags, times), never its
-- headers or content.
CREATE TABLE unmatched_events (
    message_id      text PRIMARY KEY,                 -- the SNS MessageId (sns_messages.message_id)
    reason          text NOT NULL CHECK (reason IN ('not_ours', 'unparseable')),
    topic_arn       text NOT NULL,
    ses_event_type  text,
    ses_message_id  text,
    detail          text,                             -- why it could not be read (unparseable)
    record          jsonb,                            -- the SES record's summary (see above)
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX unmatched_events_received_brin ON unmatched_events USING brin (received_at);
