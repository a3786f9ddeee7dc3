-- The api service's schema: tenants, API keys, and the read models it serves
-- (the email log, fed by lifecycle events; the tenant's domains, fed by domain events).

CREATE TABLE tenants (
    id             text PRIMARY KEY,                 -- ten_…
    name           text NOT NULL,
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'blocked')),
    monthly_quota  integer CHECK (monthly_quota IS NULL OR monthly_quota >= 0),
    rate_limit     integer CHECK (rate_limit IS NULL OR rate_limit >= 1),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            text PRIMARY KEY,                  -- key_…
    tenant_id     text NOT NULL REFERENCES tenants (id),
    name          text NOT NULL,
    mode          text NOT NULL CHECK (mode IN ('live', 'test')),
    permission    text NOT NULL CHECK (permission IN ('full_access', 'sending_access')),
    domain_id     text,                              -- optional restriction to one domain (dom_…)
    token_hash    text NOT NULL UNIQUE,              -- hex SHA-256 of the token; the token itself is never stored
    token_prefix  text NOT NULL,                     -- e.g. mr_live_AbCd, for display
    token_last4   text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at);

-- Domain read model: the latest snapshot seen (RPC reply or domain event) per domain.
CREATE TABLE domains (
    id                text PRIMARY KEY,              -- dom_…
    tenant_id         text NOT NULL,
    name              text NOT NULL,
    status            text NOT NULL,
    region            text NOT NULL,
    mail_from_domain  text NOT NULL,
    records           jsonb NOT NULL,
    track_opens       boolean NOT NULL DEFAULT false,
    track_clicks      boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL,
    last_checked_at   timestamptz,
    -- occurred_at of the domain event that wrote this snapshot (NULL: written from an RPC reply);
    -- with last_checked_at it orders snapshots so an older one never overwrites a newer one.
    event_at          timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX domains_tenant_name_idx ON domains (tenant_id, lower(name));

-- Email log read model.
CREATE TABLE emails (
    id             text PRIMARY KEY,                 -- msg_…
    tenant_id      text NOT NULL REFERENCES tenants (id),
    api_key_id     text NOT NULL,
    mode           text NOT NULL CHECK (mode IN ('live', 'test')),
    from_address   text NOT NULL,                    -- as given, e.g. "Acme <noreply@mail.acme.com>"
    from_domain    text NOT NULL,
    to_addresses   jsonb NOT NULL,                   -- lists of address strings
    cc_addresses   jsonb NOT NULL DEFAULT '[]',
    bcc_addresses  jsonb NOT NULL DEFAULT '[]',
    reply_to       jsonb NOT NULL DEFAULT '[]',
    subject        text NOT NULL,
    html           text,
    text           text,
    headers        jsonb NOT NULL DEFAULT '{}',
    tags           jsonb NOT NULL DEFAULT '{}',
    metadata       jsonb,
    status         text NOT NULL,
    created_at     timestamptz NOT NULL,
    last_event_at  timestamptz NOT NULL
);
CREATE INDEX emails_tenant_list_idx ON emails (tenant_id, mode, id DESC);

CREATE TABLE email_recipients (
    email_id    text NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    address     text NOT NULL,                       -- bare, normalized address
    type        text NOT NULL CHECK (type IN ('to', 'cc', 'bcc')),
    status      text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (email_id, position)
);

-- The timeline; the event id makes the projector idempotent.
CREATE TABLE email_events (
    id           text PRIMARY KEY,                   -- evt_…
    email_id     text NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    type         text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    data         jsonb NOT NULL DEFAULT '{}',
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_events_email_idx ON email_events (email_id, occurred_at);
