-- One row per accepted email: the sender's exactly-once state machine.
--   pending  → not sent yet (or a transient error put it back)
--   sending  → an attempt started; it may have reached SES (in doubt until settled)
--   sent     → the provider accepted it; EmailSent is in the outbox
--   failed   → permanently refused; EmailFailed is in the outbox
CREATE TABLE deliveries (
    email_id             text PRIMARY KEY,
    tenant_id            text NOT NULL,
    mode                 text NOT NULL CHECK (mode IN ('live', 'test')),
    -- envelope recipients (to + cc + bcc), echoed in EmailSent whichever path settles the send
    recipients           text[] NOT NULL DEFAULT '{}',
    state                text NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts             integer NOT NULL DEFAULT 0,
    attempt_started_at   timestamptz,
    provider             text,
    provider_message_id  text,
    failure_reason       text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- Operators look for sends that are still in doubt.
CREATE INDEX deliveries_in_doubt ON deliveries (attempt_started_at) WHERE state = 'sending';
