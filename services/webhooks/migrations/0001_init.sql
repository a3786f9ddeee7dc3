-- Tenant webhook endpoints. The signing secret is stored only Fernet-encrypted.
CREATE TABLE endpoints (
    id               text PRIMARY KEY,                 -- wh_…
    tenant_id        text NOT NULL,
    url              text NOT NULL,
    events           text[] NOT NULL,                  -- event types, or {'*'}
    description      text,
    secret_encrypted text NOT NULL,
    enabled          boolean NOT NULL DEFAULT true,
    disabled_reason  text,                             -- e.g. 'gone' (the endpoint answered 410)
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz                       -- soft delete: no further deliveries
);
CREATE INDEX endpoints_tenant ON endpoints (tenant_id, id) WHERE deleted_at IS NULL;

-- What webhook payloads need to know about an email, recorded from EmailQueued
-- (lifecycle events only carry ids and their own details).
CREATE TABLE email_summaries (
    email_id     text PRIMARY KEY,
    tenant_id    text NOT NULL,
    mode         text NOT NULL,
    from_address text NOT NULL,
    to_addresses jsonb NOT NULL,                       -- ["Name <a@b>", …] as sent
    recipients   jsonb NOT NULL,                       -- bare addresses of to + cc + bcc
    subject      text NOT NULL,
    tags         jsonb NOT NULL DEFAULT '{}',
    metadata     jsonb,
    created_at   timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

-- One event to one endpoint. `payload` is the exact JSON body signed and sent on every attempt.
-- pending   → due at next_attempt_at
-- in_flight → claimed by a dispatcher until lease_expires_at (a crashed worker's claim expires
--             and the delivery is claimed again)
-- succeeded | failed | canceled → final
CREATE TABLE deliveries (
    id               text PRIMARY KEY,                 -- whd_…
    endpoint_id      text NOT NULL REFERENCES endpoints (id),
    tenant_id        text NOT NULL,
    event_id         text NOT NULL,                    -- evt_…, also the webhook-id header
    event_type       text NOT NULL,
    payload          bytea NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_flight', 'succeeded', 'failed', 'canceled')),
    attempts         integer NOT NULL DEFAULT 0,       -- attempts started (claims)
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_expires_at) WHERE status = 'in_flight';
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, created_at);

-- Every attempt, as the tenant's delivery log shows it.
CREATE TABLE delivery_attempts (
    id            bigserial PRIMARY KEY,
    delivery_id   text NOT NULL REFERENCES deliveries (id),
    endpoint_id   text NOT NULL,
    attempt       integer NOT NULL,
    started_at    timestamptz NOT NULL,
    status_code   integer,                             -- null when no response (timeout, refused, …)
    latency_ms    integer NOT NULL,
    error         text,                                -- null on success; e.g. 'http_500', 'timeout', 'address_not_allowed'
    next_retry_at timestamptz,                         -- null when no retry follows
    UNIQUE (delivery_id, attempt)
);
