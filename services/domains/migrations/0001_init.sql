-- Tenants' sending domains (runs with search_path = domains).
CREATE TABLE domains (
    id                   text PRIMARY KEY,                     -- dom_…
    tenant_id            text NOT NULL,
    name                 text NOT NULL,                        -- lower-case A-label form
    status               text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'verified', 'partially_verified', 'temporary_failure', 'failed')),
    region               text NOT NULL,                        -- SES region of the identity
    mail_from_subdomain  text NOT NULL,
    mail_from_domain     text NOT NULL,
    track_opens          boolean NOT NULL DEFAULT false,
    track_clicks         boolean NOT NULL DEFAULT false,
    failure_reason       text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    verified_at          timestamptz,                          -- first time it became verified
    last_checked_at      timestamptz,
    -- When a poller should check it next; claiming pushes it forward by a lease so replicas never
    -- check the same domain at once.
    next_check_at        timestamptz NOT NULL DEFAULT now()
);

-- One live registration per name across all tenants; a failed one does not block a new attempt.
CREATE UNIQUE INDEX domains_name_live ON domains (name) WHERE status <> 'failed';
CREATE INDEX domains_due ON domains (next_check_at) WHERE status <> 'failed';
CREATE INDEX domains_tenant ON domains (tenant_id, created_at);

-- The DNS records a tenant publishes, in display order, each with its own status.
CREATE TABLE domain_records (
    domain_id  text NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    position   smallint NOT NULL,
    purpose    text NOT NULL CHECK (purpose IN ('dkim', 'mail_from_mx', 'mail_from_spf', 'dmarc')),
    type       text NOT NULL CHECK (type IN ('CNAME', 'MX', 'TXT')),
    name       text NOT NULL,
    value      text NOT NULL,
    priority   integer,
    required   boolean NOT NULL DEFAULT true,
    status     text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'verified', 'failed')),
    PRIMARY KEY (domain_id, position)
);
