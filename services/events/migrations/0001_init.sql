-- Every SNS message accepted (signature verified, topic allowed), by SNS MessageId: the
-- de-duplication key (SNS delivers at least once) and an audit trail of what SES reported.
CREATE TABLE sns_messages (
    message_id      text PRIMARY KEY,
    topic_arn       text NOT NULL,
    type            text NOT NULL,
    ses_event_type  text,
    ses_message_id  text,
    email_id        text,
    tenant_id       text,
    events_emitted  int NOT NULL DEFAULT 0,
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sns_messages_email ON sns_messages (email_id) WHERE email_id IS NOT NULL;

-- SNS subscriptions this service confirmed.
CREATE TABLE subscriptions (
    topic_arn     text PRIMARY KEY,
    confirmed_at  timestamptz NOT NULL DEFAULT now()
);
