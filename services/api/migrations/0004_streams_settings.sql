-- Streams, one-click unsubscribe and the tenant's settings (issue 16).

-- The tenant's default sender, used when a send omits `from` (PATCH /v1/settings). As given,
-- e.g. "Acme <noreply@mail.acme.com>"; NULL: none.
ALTER TABLE tenants ADD COLUMN default_from text;

-- Addresses a tenant must not send to, per mode. Only `unsubscribe` rows are written in this
-- version (POST /v1/unsubscribe/{token}); the suppression list API and send-time filtering build
-- on this table. `email` is the normalised bare address (lower-cased).
CREATE TABLE suppressions (
    tenant_id        text NOT NULL REFERENCES tenants (id),
    mode             text NOT NULL CHECK (mode IN ('live', 'test')),
    email            text NOT NULL CHECK (email = lower(email)),
    reason           text NOT NULL CHECK (reason IN ('bounce', 'complaint', 'unsubscribe', 'manual')),
    source_email_id  text,                               -- msg_… that led to it, when there is one
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, mode, email)
);

-- The key cache (auth/cache.py) also remembers each tenant's domain tracking defaults, so a send
-- resolves them without a query: any change that can alter them (a domain added, its tracking
-- settings or its status changed) tells every API process to forget, in the writing transaction.
CREATE FUNCTION notify_domain_tracking_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mailroom_api_auth', '');
    RETURN NULL;
END;
$$;

-- (Domains are added and change status rarely; a tenant's map depends on which of its rows of a
-- name wins, a verified one else the newest, so every such change counts.)
CREATE TRIGGER domains_tracking_inserted AFTER INSERT ON domains
    FOR EACH ROW EXECUTE FUNCTION notify_domain_tracking_changed();

CREATE TRIGGER domains_tracking_updated AFTER UPDATE ON domains
    FOR EACH ROW WHEN (
        (OLD.track_opens, OLD.track_clicks, OLD.status, OLD.name)
            IS DISTINCT FROM (NEW.track_opens, NEW.track_clicks, NEW.status, NEW.name)
    )
    EXECUTE FUNCTION notify_domain_tracking_changed();
